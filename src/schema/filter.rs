//! A typed filter over one table's rows: the conditions, order and bound the repository's reads
//! need that plain equality lists (`bridge::ListQuery`) cannot express. It holds column names
//! and wire values, never SQL text; each store renders it with its own placeholders and binds
//! the values (`store::sqlite::filter_sql`, `store::postgres::filter_sql`), so no condition is
//! written in one dialect and rewritten for the other.

use super::{Column, Table};
use crate::error::{Error, Result};
use serde_json::Value;

/// Rows of a table that meet every condition, in `order`, at most `limit` after `offset`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    conditions: Vec<Condition>,
    order: Vec<Order>,
    limit: Option<u32>,
    offset: u64,
}

#[derive(Clone, Debug, PartialEq)]
enum Condition {
    /// `column = value`; a null value means `column IS NULL` (SQL's `= NULL` matches nothing).
    Eq(&'static str, Value),
    /// `column = 'text'` with the text written into the SQL, so that a partial index with the
    /// same predicate applies (a bound value hides it from the planners). Only a value of the
    /// column's value set (`Column::allowed`) is accepted.
    EqValueSetMember(&'static str, &'static str),
    /// `column IN ('a', 'b', ...)`, the members of the column's value set written into the SQL
    /// like [`Condition::EqValueSetMember`]; no members matches nothing.
    InValueSet(&'static str, Vec<&'static str>),
    /// `column > value`.
    Greater(&'static str, Value),
    /// `column <= value`.
    AtMost(&'static str, Value),
    /// `(a, b, ...) > (x, y, ...)`: the rows after a cursor in the order of those columns.
    After(Vec<(&'static str, Value)>),
}

#[derive(Clone, Debug, PartialEq)]
enum Order {
    Ascending(&'static str),
    Descending(&'static str),
    /// The values of `first`, in that order, before every other value of the column's value set
    /// (`CASE c WHEN first[0] THEN 0 ... ELSE n END`), written as an expression index has it.
    Rank(&'static str, &'static [&'static str]),
}

impl Filter {
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Rows whose `column` equals `value` (a wire value); `null` matches NULL.
    pub fn eq(mut self, column: &'static str, value: impl Into<Value>) -> Filter {
        self.conditions.push(Condition::Eq(column, value.into()));
        self
    }

    /// Rows whose `column` holds `member` of its value set, written into the SQL (see
    /// [`Condition::EqValueSetMember`]).
    pub fn eq_value_set_member(mut self, column: &'static str, member: &'static str) -> Filter {
        self.conditions.push(Condition::EqValueSetMember(column, member));
        self
    }

    /// Rows whose `column` holds one of `members` of its value set (written into the SQL).
    pub fn in_value_set(mut self, column: &'static str, members: Vec<&'static str>) -> Filter {
        self.conditions.push(Condition::InValueSet(column, members));
        self
    }

    /// Whether the filter only has conditions (no order, limit or offset): what a statement that
    /// changes rows (`UPDATE … WHERE`) can take.
    pub fn is_conditions_only(&self) -> bool {
        self.order.is_empty() && self.limit.is_none() && self.offset == 0
    }

    pub fn greater(mut self, column: &'static str, value: impl Into<Value>) -> Filter {
        self.conditions.push(Condition::Greater(column, value.into()));
        self
    }

    pub fn at_most(mut self, column: &'static str, value: impl Into<Value>) -> Filter {
        self.conditions.push(Condition::AtMost(column, value.into()));
        self
    }

    /// Rows after `cursor` (column, value pairs) in the order of its columns.
    pub fn after(mut self, cursor: Vec<(&'static str, Value)>) -> Filter {
        self.conditions.push(Condition::After(cursor));
        self
    }

    pub fn ascending(mut self, column: &'static str) -> Filter {
        self.order.push(Order::Ascending(column));
        self
    }

    pub fn descending(mut self, column: &'static str) -> Filter {
        self.order.push(Order::Descending(column));
        self
    }

    /// Order by `column`'s value-set members `first` (in that order), then its other values.
    pub fn ranked(mut self, column: &'static str, first: &'static [&'static str]) -> Filter {
        self.order.push(Order::Rank(column, first));
        self
    }

    pub fn limit(mut self, limit: u32) -> Filter {
        self.limit = Some(limit);
        self
    }

    pub fn offset(mut self, offset: u64) -> Filter {
        self.offset = offset;
        self
    }

    /// The filter as the SQL after `WHERE` for `table`. `bind(column, value)` binds one value
    /// and returns the store's placeholder for it (typed for `column`): the only part that
    /// differs between the stores; every other part reads the same in SQLite and PostgreSQL.
    /// Column names and value-set members come from the registry, never from the filter's text.
    pub(crate) fn render(
        &self,
        table: &Table,
        mut bind: impl FnMut(&'static Column, &Value) -> Result<String>,
    ) -> Result<String> {
        let column = |name: &str| {
            table.column(name).ok_or_else(|| Error::Internal(format!("a filter names {}.{name}", table.name)))
        };
        let member = |c: &'static Column, value: &str| -> Result<String> {
            match c.allowed {
                Some(allowed) if allowed.contains(&value) => Ok(format!("'{value}'")),
                _ => Err(Error::Internal(format!(
                    "{value:?} is not in the value set of {}.{}",
                    table.name, c.name
                ))),
            }
        };
        let mut conditions = Vec::with_capacity(self.conditions.len());
        for condition in &self.conditions {
            conditions.push(match condition {
                Condition::Eq(name, Value::Null) => format!("{} IS NULL", column(name)?.name),
                Condition::Eq(name, value) => {
                    let c = column(name)?;
                    format!("{} = {}", c.name, bind(c, value)?)
                }
                Condition::EqValueSetMember(name, value) => {
                    let c = column(name)?;
                    format!("{} = {}", c.name, member(c, value)?)
                }
                Condition::InValueSet(_, members) if members.is_empty() => "1 = 0".to_string(),
                Condition::InValueSet(name, members) => {
                    let c = column(name)?;
                    let members = members.iter().map(|m| member(c, m)).collect::<Result<Vec<_>>>()?;
                    format!("{} IN ({})", c.name, members.join(", "))
                }
                Condition::Greater(name, value) => {
                    let c = column(name)?;
                    format!("{} > {}", c.name, bind(c, value)?)
                }
                Condition::AtMost(name, value) => {
                    let c = column(name)?;
                    format!("{} <= {}", c.name, bind(c, value)?)
                }
                Condition::After(cursor) => {
                    let (mut names, mut values) = (Vec::new(), Vec::new());
                    for (name, value) in cursor {
                        let c = column(name)?;
                        names.push(c.name);
                        values.push(bind(c, value)?);
                    }
                    format!("({}) > ({})", names.join(", "), values.join(", "))
                }
            });
        }
        let mut sql = if conditions.is_empty() { "1 = 1".to_string() } else { conditions.join(" AND ") };
        let mut order = Vec::with_capacity(self.order.len());
        for o in &self.order {
            order.push(match o {
                Order::Ascending(name) => column(name)?.name.to_string(),
                Order::Descending(name) => format!("{} DESC", column(name)?.name),
                Order::Rank(name, first) => {
                    let c = column(name)?;
                    let mut case = format!("(CASE {}", c.name);
                    for (rank, value) in first.iter().enumerate() {
                        case.push_str(&format!(" WHEN {} THEN {rank}", member(c, value)?));
                    }
                    case.push_str(&format!(" ELSE {} END)", first.len()));
                    case
                }
            });
        }
        if !order.is_empty() {
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        match (self.limit, self.offset) {
            (Some(limit), offset) => sql.push_str(&format!(" LIMIT {limit} OFFSET {offset}")),
            (None, 0) => {}
            (None, offset) => {
                return Err(Error::Internal(format!("a filter with offset {offset} and no limit")))
            }
        }
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::table;
    use serde_json::json;

    /// Renders with `?column` placeholders, collecting the bound values.
    fn render(t: &str, f: &Filter) -> Result<(String, Vec<Value>)> {
        let mut bound = Vec::new();
        let sql = f.render(table(t).unwrap(), |c, v| {
            bound.push(v.clone());
            Ok(format!("?{}", c.name))
        })?;
        Ok((sql, bound))
    }

    #[test]
    fn values_are_bound_and_null_is_is_null() {
        let f = Filter::new()
            .eq("section_type", "intro")
            .eq("job_id", Value::Null)
            .descending("version")
            .limit(1);
        let (sql, bound) = render("generated_text", &f).unwrap();
        assert_eq!(
            sql,
            "section_type = ?section_type AND job_id IS NULL ORDER BY version DESC LIMIT 1 OFFSET 0"
        );
        assert_eq!(bound, vec![json!("intro")]);
        let f = Filter::new().eq("job_id", "j").after(vec![("created_at", json!("t")), ("id", json!("i"))]);
        let (sql, bound) = render("job_logs", &f).unwrap();
        assert_eq!(sql, "job_id = ?job_id AND (created_at, id) > (?created_at, ?id)");
        assert_eq!(bound, vec![json!("j"), json!("t"), json!("i")]);
    }

    #[test]
    fn value_set_members_are_written_and_checked_against_the_registry() {
        let f = Filter::new()
            .eq_value_set_member("status", "queued")
            .ranked("priority", &["urgent", "high", "normal"])
            .ascending("queued_at")
            .ascending("id")
            .limit(1);
        let (sql, bound) = render("jobs", &f).unwrap();
        assert_eq!(
            sql,
            "status = 'queued' ORDER BY (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 \
             WHEN 'normal' THEN 2 ELSE 3 END), queued_at, id LIMIT 1 OFFSET 0"
        );
        assert!(bound.is_empty());
        assert!(render("jobs", &Filter::new().eq_value_set_member("status", "queued' OR '1")).is_err());
        assert!(render("jobs", &Filter::new().eq_value_set_member("type", "x")).is_err());
        let f = Filter::new().in_value_set("status", vec!["queued", "running"]);
        assert_eq!(render("jobs", &f).unwrap().0, "status IN ('queued', 'running')");
        assert!(f.is_conditions_only());
        assert_eq!(render("jobs", &Filter::new().in_value_set("status", vec![])).unwrap().0, "1 = 0");
        assert!(render("jobs", &Filter::new().in_value_set("status", vec!["queued", "x') OR ('1"])).is_err());
        assert!(!Filter::new().limit(1).is_conditions_only());
        assert!(render("jobs", &Filter::new().ranked("priority", &["soon"])).is_err());
    }

    #[test]
    fn unknown_columns_are_refused() {
        assert!(render("jobs", &Filter::new().eq("nosuch", 1)).is_err());
        assert!(render("jobs", &Filter::new().descending("nosuch")).is_err());
        assert!(render("jobs", &Filter::new().after(vec![("id", json!("x")), ("nosuch", json!(1))])).is_err());
    }
}
