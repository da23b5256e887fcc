//! users: create, look up (by id or e-mail), change, disable, list.

use super::{changes, new_row, now, to_wire, value_set, Entity, Paging, TypedRows, TypedWrite};
use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::schema::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

value_set! {
    /// `users.role`.
    UserRole for "users"."role" { Admin = "admin", Member = "member", Reviewer = "reviewer", Service = "service" }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    /// Always lower-case.
    pub email: String,
    pub display_name: String,
    pub role: UserRole,
    pub created_at: String,
    pub updated_at: String,
    /// When the user was disabled; `None` = active.
    pub disabled_at: Option<String>,
}

impl Entity for User {
    const TABLE: &'static str = "users";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewUser {
    /// Stored lower-case.
    pub email: String,
    pub display_name: String,
    /// Default `member`.
    pub role: Option<UserRole>,
    /// Generated when absent.
    pub id: Option<Uuid>,
}

impl NewUser {
    pub fn new(email: impl Into<String>, display_name: impl Into<String>) -> NewUser {
        NewUser { email: email.into(), display_name: display_name.into(), ..NewUser::default() }
    }
}

/// The columns `update_user` may change; `None` leaves a column as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserChanges {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: Option<UserRole>,
}

/// E-mail addresses are kept lower-case (a CHECK in both stores), so lookups ignore case.
/// Full Unicode lower-casing: the stored form is a fixed point of both SQLite's ASCII `lower()`
/// and PostgreSQL's locale-aware one for the addresses that occur in practice.
fn normalise_email(email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let ok = e.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !e.chars().any(char::is_whitespace);
    if !ok {
        return Err(Error::invalid("users.email", "must be an e-mail address (local@domain, no spaces)"));
    }
    Ok(e)
}

impl Bridge {
    pub fn create_user(&self, user: &NewUser) -> Result<User> {
        let mut row = to_wire::<User>(user)?;
        row.insert("email".into(), Value::String(normalise_email(&user.email)?));
        let row = new_row::<User>(row)?;
        self.write(|tx| tx.insert_as(&row))
    }

    pub fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        self.get_entity(id)
    }

    /// Case-insensitive: the address is lower-cased before the lookup.
    pub fn get_user_by_email(&self, email: &str) -> Result<Option<User>> {
        let Ok(email) = normalise_email(email) else { return Ok(None) };
        self.find_entity(&[("email", email.into())], &[], false)
    }

    /// Change e-mail, display name and/or role; `updated_at` becomes now.
    pub fn update_user(&self, id: Uuid, change: &UserChanges) -> Result<User> {
        let mut row = to_wire::<User>(change)?;
        if let Some(e) = &change.email {
            row.insert("email".into(), Value::String(normalise_email(e)?));
        }
        row.insert("updated_at".into(), Value::String(now()));
        let row = changes::<User>(row)?;
        self.write(|tx| tx.update_as(&id.to_string(), &row))
    }

    /// Mark the user disabled (`disabled_at` = now). Disabling a disabled user keeps the first
    /// `disabled_at` and changes nothing.
    pub fn disable_user(&self, id: Uuid) -> Result<User> {
        let key = id.to_string();
        self.write(|tx| {
            let user: User = tx.require(&key)?;
            if user.disabled_at.is_some() {
                return Ok(user);
            }
            let t = now();
            let mut row = Row::new();
            row.insert("disabled_at".into(), Value::String(t.clone()));
            row.insert("updated_at".into(), Value::String(t));
            tx.update_as(&key, &changes::<User>(row)?)
        })
    }

    /// Users in creation order.
    pub fn list_users(&self, page: Paging) -> Result<Vec<User>> {
        self.find_entities(&[], &["created_at"], false, page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(normalise_email("  Ann@Example.COM ").unwrap(), "ann@example.com");
        for bad in ["", "ann", "@x", "ann@", "a nn@x.org"] {
            let e = normalise_email(bad).unwrap_err();
            assert!(e.to_string().contains("users.email"), "{e}");
        }
    }
}
