//! pages and their headings.

use super::{new_row, now, to_wire, value_set, Entity, TypedWrite};
use crate::bridge::Bridge;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

value_set! {
    /// `headings.level`.
    HeadingLevel for "headings"."level" { H1 = "h1", H2 = "h2", H3 = "h3", H4 = "h4", H5 = "h5", H6 = "h6" }
}

/// A fetched web page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub id: Uuid,
    pub url: String,
    pub title: Option<String>,
    pub lang: Option<String>,
    pub content_hash: Option<String>,
    pub fetched_at: String,
    pub source_job_id: Option<Uuid>,
    pub serpapi_result_id: Option<Uuid>,
}

impl Entity for Page {
    const TABLE: &'static str = "pages";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewPage {
    pub url: String,
    pub title: Option<String>,
    pub lang: Option<String>,
    pub content_hash: Option<String>,
    pub source_job_id: Option<Uuid>,
    pub serpapi_result_id: Option<Uuid>,
    /// Now when absent.
    pub fetched_at: Option<String>,
    /// Generated when absent.
    pub id: Option<Uuid>,
}

impl NewPage {
    pub fn new(url: impl Into<String>) -> NewPage {
        NewPage { url: url.into(), ..NewPage::default() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heading {
    pub id: Uuid,
    pub page_id: Uuid,
    pub level: HeadingLevel,
    pub text: String,
    pub embeddings_ref: Option<Uuid>,
    pub created_at: String,
}

impl Entity for Heading {
    const TABLE: &'static str = "headings";
}

/// A heading of a page (the page is given to [`Bridge::add_headings`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewHeading {
    pub level: HeadingLevel,
    pub text: String,
    pub embeddings_ref: Option<Uuid>,
    /// The batch's time when absent.
    pub created_at: Option<String>,
    /// Generated when absent.
    pub id: Option<Uuid>,
}

impl NewHeading {
    pub fn new(level: HeadingLevel, text: impl Into<String>) -> NewHeading {
        NewHeading { level, text: text.into(), embeddings_ref: None, created_at: None, id: None }
    }
}

impl Bridge {
    pub fn add_page(&self, page: &NewPage) -> Result<Page> {
        self.create_entity(page)
    }

    pub fn get_page(&self, id: Uuid) -> Result<Option<Page>> {
        self.get_entity(id)
    }

    /// Add a page's headings, all in one transaction (all or none). Headings without their own
    /// `created_at` share one timestamp and get time-ordered ids, so [`Bridge::list_headings`]
    /// returns a batch in the order given.
    pub fn add_headings(&self, page_id: Uuid, headings: &[NewHeading]) -> Result<Vec<Heading>> {
        let batch_time = Value::String(now());
        let n = headings.len();
        let rows = headings
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut row = to_wire::<Heading>(h)?;
                row.insert("page_id".into(), Value::String(page_id.to_string()));
                row.entry("created_at").or_insert_with(|| batch_time.clone());
                row.entry("id").or_insert_with(|| Value::String(Uuid::now_v7().to_string()));
                new_row::<Heading>(row).map_err(|e| match e {
                    Error::InvalidArgument { field, message } => {
                        Error::invalid(field, format!("{message} (heading {} of {n})", i + 1))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(|tx| rows.iter().map(|r| tx.insert_as(r)).collect())
    }

    /// A page's headings in (created_at, id) order.
    pub fn list_headings(&self, page_id: Uuid) -> Result<Vec<Heading>> {
        let page = super::Paging::first(crate::reads::MAX_LIST_LIMIT as u32);
        self.find_entities(&[("page_id", page_id.to_string().into())], &["created_at"], false, page)
    }
}
