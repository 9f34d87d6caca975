//! The transparency report: what rules exist, on whose authority, and what they did.
//!
//! It holds counts and the rules' legal basis only: no participant ids, room ids, regions of
//! individuals, addresses or lift reasons (free text that could name someone).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{RuleState, Store, StoreError, now_rfc3339};
use crate::rules::{Direction, Media, RuleCounters, RuleId};

/// `GET /v1/transparency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Transparency {
    /// When the report was made (RFC 3339 UTC).
    pub generated_at: String,
    /// All rules ever added, by state.
    pub rules: StateCounts,
    /// Rules by the jurisdiction of their basis.
    pub by_jurisdiction: BTreeMap<String, StateCounts>,
    /// Rules by the authority of their basis.
    pub by_authority: BTreeMap<String, StateCounts>,
    /// Each rule, by id.
    pub per_rule: Vec<RuleReport>,
    /// Sum over all rules of `participants_matched_total`.
    pub participants_matched_total: u64,
    /// Sum over all rules of `packets_dropped`.
    pub packets_dropped: Dropped,
    /// The audit log's head when the report was made; publishing it pins the log.
    pub audit_head: AuditHead,
}

/// Rule counts by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StateCounts {
    /// All states.
    pub total: u64,
    /// In force.
    pub active: u64,
    /// Lifted.
    pub lifted: u64,
    /// Expired.
    pub expired: u64,
}

/// One rule in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RuleReport {
    /// The rule's id.
    pub id: RuleId,
    /// Basis: jurisdiction.
    pub jurisdiction: String,
    /// Basis: authority.
    pub authority: String,
    /// Basis: the authority's reference.
    pub reference: String,
    /// Which way it blocks.
    pub direction: Direction,
    /// Which media it blocks.
    pub media: Media,
    /// Active, lifted or expired.
    pub state: RuleState,
    /// When it was added.
    pub created_at: String,
    /// When it expires (or expired).
    pub expires_at: String,
    /// When it ended (lifted or expired), if it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Participants it matches now.
    pub participants_matched: u64,
    /// Participants it has matched in all.
    pub participants_matched_total: u64,
    /// Packets it dropped.
    pub packets_dropped: Dropped,
}

/// Dropped packets by direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Dropped {
    /// Media a matched participant sent that nobody got.
    pub send: u64,
    /// Media a matched participant did not get.
    pub receive: u64,
}

/// The audit log's last entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditHead {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

impl Store {
    /// Builds the report. `live` holds the owner's counters; a rule missing from it (say,
    /// one lifted before a restart) uses its saved counters, or zeros.
    pub fn transparency(
        &self,
        live: &[(RuleId, RuleCounters)],
    ) -> Result<Transparency, StoreError> {
        let saved: HashMap<RuleId, RuleCounters> = self.counters()?.into_iter().collect();
        let live: HashMap<RuleId, RuleCounters> = live.iter().copied().collect();
        let mut report = Transparency {
            generated_at: now_rfc3339(),
            rules: StateCounts::default(),
            by_jurisdiction: BTreeMap::new(),
            by_authority: BTreeMap::new(),
            per_rule: Vec::new(),
            participants_matched_total: 0,
            packets_dropped: Dropped::default(),
            audit_head: {
                let (seq, hash) = self.audit_head()?;
                AuditHead { seq, hash }
            },
        };
        for r in self.all_rules()? {
            let basis = r.spec.basis.clone().unwrap_or_default();
            let c = live
                .get(&r.id)
                .or_else(|| saved.get(&r.id))
                .copied()
                .unwrap_or_default();
            report.rules.add(r.state);
            report
                .by_jurisdiction
                .entry(basis.jurisdiction.clone())
                .or_default()
                .add(r.state);
            report
                .by_authority
                .entry(basis.authority.clone())
                .or_default()
                .add(r.state);
            let (sum, drops) = (
                &mut report.participants_matched_total,
                &mut report.packets_dropped,
            );
            *sum = sum.saturating_add(c.participants_matched_total);
            drops.send = drops.send.saturating_add(c.packets_dropped_send);
            drops.receive = drops.receive.saturating_add(c.packets_dropped_receive);
            report.per_rule.push(RuleReport {
                id: r.id,
                jurisdiction: basis.jurisdiction,
                authority: basis.authority,
                reference: basis.reference,
                direction: r.spec.direction,
                media: r.spec.media,
                state: r.state,
                created_at: r.created_at,
                expires_at: r.spec.expires_at.clone().unwrap_or_default(),
                ended_at: r.lifted_at.or(r.expired_at),
                participants_matched: c.participants_matched,
                participants_matched_total: c.participants_matched_total,
                packets_dropped: Dropped {
                    send: c.packets_dropped_send,
                    receive: c.packets_dropped_receive,
                },
            });
        }
        Ok(report)
    }
}

impl StateCounts {
    fn add(&mut self, state: RuleState) {
        self.total += 1;
        match state {
            RuleState::Active => self.active += 1,
            RuleState::Lifted => self.lifted += 1,
            RuleState::Expired => self.expired += 1,
        }
    }
}
