//! generated_text: versioned texts with a review workflow.
//!
//! A *lineage* is the texts sharing (section_type, source_heading_id, job_id, owner_id); its
//! versions are numbered 1, 2, … A new version is a new row (earlier versions are kept).

use super::{changes, new_row, to_wire, transition, value_set, Entity, Paging, TypedRows, TypedWrite};
use crate::bridge::Bridge;
use crate::error::Result;
use crate::schema::{Filter, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

value_set! {
    /// `generated_text.section_type`.
    SectionType for "generated_text"."section_type" {
        Title = "title",
        MetaDescription = "meta_description",
        Intro = "intro",
        Section = "section",
        Faq = "faq",
        Conclusion = "conclusion",
        Summary = "summary",
    }
}

value_set! {
    /// `generated_text.status`: draft → in_review → approved | rejected; approved → published;
    /// rejected → draft.
    GeneratedTextStatus for "generated_text"."status" {
        Draft = "draft",
        InReview = "in_review",
        Approved = "approved",
        Rejected = "rejected",
        Published = "published",
    }
}

impl GeneratedTextStatus {
    /// The statuses a text in this status may move to.
    pub fn allowed_next(self) -> &'static [GeneratedTextStatus] {
        use GeneratedTextStatus::*;
        match self {
            Draft => &[InReview],
            InReview => &[Approved, Rejected],
            Approved => &[Published],
            Rejected => &[Draft],
            Published => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratedText {
    pub id: Uuid,
    pub section_type: SectionType,
    pub heading: Option<String>,
    pub content: String,
    pub keywords_used: Value,
    pub lang: Option<String>,
    pub metrics: Value,
    pub status: GeneratedTextStatus,
    pub version: i32,
    pub source_heading_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub created_at: String,
    pub job_id: Option<Uuid>,
}

impl Entity for GeneratedText {
    const TABLE: &'static str = "generated_text";
}

/// The first version of a text (status `draft`, version 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewGeneratedText {
    pub section_type: SectionType,
    pub content: String,
    pub heading: Option<String>,
    /// Default `[]` when left out; `Some(Value::Null)` is refused.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub keywords_used: Option<Value>,
    pub lang: Option<String>,
    /// Default `{}` when left out; `Some(Value::Null)` is refused.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    pub source_heading_id: Option<Uuid>,
    pub owner_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    /// Generated when absent.
    pub id: Option<Uuid>,
}

impl NewGeneratedText {
    pub fn new(section_type: SectionType, content: impl Into<String>) -> NewGeneratedText {
        NewGeneratedText {
            section_type,
            content: content.into(),
            heading: None,
            keywords_used: None,
            lang: None,
            metrics: None,
            source_heading_id: None,
            owner_id: None,
            job_id: None,
            id: None,
        }
    }
}

/// A new version's content; `None` fields are taken from the version it revises.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratedTextRevision {
    pub content: String,
    pub heading: Option<String>,
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub keywords_used: Option<Value>,
    pub lang: Option<String>,
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
}

impl GeneratedTextRevision {
    pub fn new(content: impl Into<String>) -> GeneratedTextRevision {
        GeneratedTextRevision { content: content.into(), ..GeneratedTextRevision::default() }
    }
}

/// The newest version in the lineage of `text`: the texts of its section type, source heading,
/// job and owner (a missing one matches NULL).
/// What names a lineage (the columns `lineage_latest` matches), for `WriteTx::serialize_on`.
fn lineage_of(text: &GeneratedText) -> String {
    let id = |u: Option<Uuid>| u.map_or_else(|| "-".to_string(), |u| u.to_string());
    format!(
        "{}/{}/{}/{}",
        text.section_type.as_str(),
        id(text.source_heading_id),
        id(text.job_id),
        id(text.owner_id)
    )
}

fn lineage_latest(text: &GeneratedText) -> Filter {
    let id = |u: Option<Uuid>| u.map_or(Value::Null, |u| Value::String(u.to_string()));
    Filter::new()
        .eq("section_type", text.section_type.as_str())
        .eq("source_heading_id", id(text.source_heading_id))
        .eq("job_id", id(text.job_id))
        .eq("owner_id", id(text.owner_id))
        .descending("version")
        .limit(1)
}

impl Bridge {
    pub fn create_generated_text(&self, text: &NewGeneratedText) -> Result<GeneratedText> {
        self.create_entity(text)
    }

    pub fn get_generated_text(&self, id: Uuid) -> Result<Option<GeneratedText>> {
        self.get_entity(id)
    }

    /// Add a version to the lineage of text `of`: a new `draft` row with the same section
    /// type, source heading, job and owner, numbered one above the lineage's highest version
    /// (read and written in one transaction, so concurrent revisions get distinct numbers).
    pub fn add_generated_text_version(
        &self,
        of: Uuid,
        revision: &GeneratedTextRevision,
    ) -> Result<GeneratedText> {
        let given = to_wire::<GeneratedText>(revision)?;
        // Check the revision's own fields before taking the write lock.
        changes::<GeneratedText>(given.clone())?;
        self.write(|tx| {
            let base: GeneratedText = tx.require(&of.to_string())?;
            tx.serialize_on("generated_text.lineage", &lineage_of(&base))?;
            let latest: Option<GeneratedText> = tx.first_as(&lineage_latest(&base))?;
            let version = latest.map_or(base.version, |l| l.version.max(base.version)) + 1;
            let mut row = to_wire::<GeneratedText>(&base)?;
            for c in ["id", "created_at", "status"] {
                row.remove(c);
            }
            row.extend(given);
            row.insert("version".into(), Value::from(version));
            tx.insert_as(&new_row::<GeneratedText>(row)?)
        })
    }

    /// Move a text along the review workflow (see [`GeneratedTextStatus::allowed_next`]);
    /// anything else is `Error::Conflict`.
    pub fn set_generated_text_status(&self, id: Uuid, status: GeneratedTextStatus) -> Result<GeneratedText> {
        let key = id.to_string();
        self.write(|tx| {
            let text: GeneratedText = tx.require(&key)?;
            transition("generated text", id, text.status, status, text.status.allowed_next())?;
            let mut set = Row::new();
            set.insert("status".into(), Value::String(status.as_str().into()));
            tx.update_as(&key, &changes::<GeneratedText>(set)?)
        })
    }

    /// The texts generated from a heading, by section type, then version.
    pub fn list_generated_text_by_heading(
        &self,
        heading_id: Uuid,
        page: Paging,
    ) -> Result<Vec<GeneratedText>> {
        let by = [("source_heading_id", heading_id.to_string().into())];
        self.find_entities(&by, &["section_type", "version"], false, page)
    }

    /// An owner's texts in creation order.
    pub fn list_generated_text_by_owner(&self, owner_id: Uuid, page: Paging) -> Result<Vec<GeneratedText>> {
        self.find_entities(&[("owner_id", owner_id.to_string().into())], &["created_at"], false, page)
    }
}
