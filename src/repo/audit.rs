//! audit_events: record and list (by entity, or by actor).

use super::{Entity, Paging};
use crate::bridge::Bridge;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    /// The kind of thing acted on (a table name, `flags`, …).
    pub entity: String,
    pub entity_id: Option<Uuid>,
    pub metadata: Value,
    pub created_at: String,
}

impl Entity for AuditEvent {
    const TABLE: &'static str = "audit_events";
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEvent {
    pub action: String,
    pub entity: String,
    pub entity_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    /// Default `{}` when left out; `Some(Value::Null)` is refused.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Now when absent.
    pub created_at: Option<String>,
    /// Generated when absent.
    pub id: Option<Uuid>,
}

impl NewAuditEvent {
    pub fn new(
        action: impl Into<String>,
        entity: impl Into<String>,
        entity_id: Option<Uuid>,
    ) -> NewAuditEvent {
        NewAuditEvent { action: action.into(), entity: entity.into(), entity_id, ..NewAuditEvent::default() }
    }
}

impl Bridge {
    pub fn record_audit_event(&self, event: &NewAuditEvent) -> Result<AuditEvent> {
        self.create_entity(event)
    }

    /// Events about one entity kind, or one entity when `entity_id` is given, oldest first.
    pub fn list_audit_events_for_entity(
        &self,
        entity: &str,
        entity_id: Option<Uuid>,
        page: Paging,
    ) -> Result<Vec<AuditEvent>> {
        let mut by = vec![("entity", Value::from(entity))];
        if let Some(id) = entity_id {
            by.push(("entity_id", id.to_string().into()));
        }
        self.find_entities(&by, &["created_at"], false, page)
    }

    /// Events by one actor, oldest first.
    pub fn list_audit_events_by_actor(&self, actor_id: Uuid, page: Paging) -> Result<Vec<AuditEvent>> {
        self.find_entities(&[("actor_id", actor_id.to_string().into())], &["created_at"], false, page)
    }
}
