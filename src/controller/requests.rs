//! Requests from the API (deploy, approve, rollback, abort), handled by the controller
//! between passes: it owns the config and the state database, so admission sees exactly
//! what the next pass will act on.

use super::Controller;

mod rollback;
use crate::deploy::{admit, Build, Kind, Phase, Rollout};
use crate::manifest::OnConflict;
use crate::store::{Approval, Deployment, Outcome, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A deploy, as the API takes it. Unknown fields are refused: a misspelled
/// `idempotency_key` must not be ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Fleet name or app.
    pub fleet: String,
    pub env: String,
    pub build: String,
    #[serde(default)]
    pub label: Option<String>,
    /// Abort and roll back if not live within this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Makes retries safe: a second request with the same key returns the rollout the
    /// first one started (finished or not); the same key for another deploy is refused.
    /// 1 to 128 printable ASCII characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub fleet: String,
    pub build: String,
    pub by: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    pub fleet: String,
    pub env: String,
    /// Build to go back to; default: the one live before the current one.
    #[serde(default)]
    pub to: Option<String>,
}

/// The answer to a deploy or rollback request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Accepted {
    /// A rollout was created (it may wait behind another one of the fleet).
    Started {
        id: i64,
        fleet: String,
        queued_behind: Option<i64>,
        /// The request repeats one already admitted (same build rolling to the fleet, or
        /// the same idempotency key): this is that rollout; nothing new was started.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        existing: bool,
    },
    /// The build is already live there; nothing to do.
    AlreadyLive { fleet: String, build: String },
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Refusal {
    /// The request is fine but policy says no (promotion, approval, freeze): exit 2.
    Refused(String),
    /// Nothing by that name.
    NotFound(String),
    /// The controller could not do it (database error).
    Internal(String),
}

impl Controller {
    /// Replicas: only the holder of a fleet's lease takes requests for it.
    fn check_owned(&self, fleet: &str) -> Result<(), Refusal> {
        if self.owns(fleet) {
            Ok(())
        } else {
            Err(Refusal::Refused(format!(
                "fleet {fleet} is managed by another replica right now; send the request to the daemon that holds its lease"
            )))
        }
    }

    fn rollouts_of(&self, fleet: &str) -> Result<Vec<Rollout>, Refusal> {
        let store = self.store.clone();
        let rows = store
            .running_rollouts()
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(rows.into_iter().filter(|r| r.fleet == fleet).collect())
    }

    /// A deploy of a build EC2 cannot launch (no such launch template version, no such
    /// AMI, an AMI not `available`) is refused before anything starts. When EC2 cannot
    /// be asked (throttled, no permission) the deploy goes on: its launches will tell.
    pub async fn check_launchable(&self, req: &DeployRequest) -> Result<(), Refusal> {
        let Ok(spec) = admit::find_fleet(&self.config, &req.fleet, &req.env) else {
            return Ok(()); // request_deploy says why
        };
        let Ok(build) = Build::parse(spec, &req.build, None) else {
            return Ok(());
        };
        // A retry gets its rollout back whatever EC2 says now (request_deploy answers it);
        // a fleet another replica holds is refused elsewhere.
        if !self.owns(&spec.name) {
            return Ok(());
        }
        let store = &self.store;
        let Ok(active) = self.rollouts_of(&spec.name) else {
            return Ok(());
        };
        let key = req.idempotency_key.as_deref();
        if !matches!(admitted_before(store, spec, &build, key, &active), Ok(None)) {
            return Ok(());
        }
        let probe = super::plan::launch_request(spec, &build, "", None, None, 1, String::new());
        match self
            .cloud
            .launch_source_missing(probe.template.as_ref(), probe.image_id.as_deref())
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(Refusal::Refused(format!(
                "build {} cannot launch on {}: {why}; nothing was started (create the launch template version, or share the AMI, then deploy again)",
                build.id, spec.name
            ))),
            Err(e) => {
                tracing::warn!(fleet = %spec.name, build = %build.id, error = %e, "cannot check that the build exists; admitting it (its launches will tell)");
                Ok(())
            }
        }
    }

    /// Admit a deploy: checks, then a queued rollout in the state database.
    pub fn request_deploy(
        &mut self,
        req: &DeployRequest,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        self.start_rollout(req, now, Kind::Deploy)
    }

    /// A deploy runs the admission checks (freeze, promotion, approval) and the fleet's
    /// strategy; a rollback (checked by `request_rollback`) skips them and runs
    /// [`crate::deploy::rollback_strategy`].
    fn start_rollout(
        &mut self,
        req: &DeployRequest,
        now: DateTime<Utc>,
        kind: Kind,
    ) -> Result<Accepted, Refusal> {
        let checks = kind == Kind::Deploy;
        let store = self.store.clone();
        let spec = admit::find_fleet(&self.config, &req.fleet, &req.env)
            .map_err(Refusal::NotFound)?
            .clone();
        self.check_owned(&spec.name)?;
        let build = Build::parse(&spec, &req.build, req.label.clone()).map_err(Refusal::Refused)?;
        // Retries first: what was admitted once is returned, not admitted again (its
        // admission checks may say otherwise by now, a freeze say).
        let key = match &req.idempotency_key {
            Some(k) => Some(idempotency_key(k)?),
            None => None,
        };
        let request = request_of(&spec, &build);
        let active = self.rollouts_of(&spec.name)?;
        if checks {
            if let Some((id, by_key)) = admitted_before(&store, &spec, &build, key, &active)? {
                if let (Some(k), false) = (key, by_key) {
                    // The key now names this rollout too: a later retry finds it even if
                    // this rollout has ended by then.
                    store
                        .remember_idempotency_key(k, id, &request, now)
                        .map_err(|e| Refusal::Internal(e.to_string()))?;
                }
                tracing::info!(fleet = %spec.name, rollout = id, build = %build.id, by_key, "deploy retried: returning rollout #{id}");
                return Ok(Accepted::Started {
                    id,
                    fleet: spec.name.clone(),
                    queued_behind: None,
                    existing: true,
                });
            }
            admit::check(&spec, &build, &store, now).map_err(Refusal::Refused)?;
        }
        let current = self.current_build(&spec);
        if active.is_empty() && current.id == build.id {
            return Ok(Accepted::AlreadyLive {
                fleet: spec.name.clone(),
                build: build.id,
            });
        }
        let mut queued_behind = active.iter().map(|r| r.id).max();
        if spec.deploy.on_conflict == OnConflict::Supersede {
            for mut r in active {
                let why = format!("superseded by a deploy of {}", build.id);
                if r.phase == Phase::Queued {
                    let body =
                        serde_json::to_string(&r).map_err(|e| Refusal::Internal(e.to_string()))?;
                    store
                        .finish(r.id, Outcome::Superseded, Some(&why), now, &body)
                        .map_err(|e| Refusal::Internal(e.to_string()))?;
                } else {
                    r.abort = Some(why);
                    let body =
                        serde_json::to_string(&r).map_err(|e| Refusal::Internal(e.to_string()))?;
                    store
                        .save_rollout(r.id, true, &body)
                        .map_err(|e| Refusal::Internal(e.to_string()))?;
                }
            }
        }
        if spec.deploy.on_conflict == OnConflict::Supersede {
            queued_behind = None;
        }
        let mut rollout = Rollout {
            id: 0,
            fleet: spec.name.clone(),
            app: spec.app().to_string(),
            env: spec.environment.clone(),
            from: current,
            to: build.clone(),
            deploy: match kind {
                Kind::Deploy => spec.deploy.clone(),
                Kind::Rollback => {
                    let mut d = spec.deploy.clone();
                    d.strategy = crate::deploy::rollback_strategy(&spec.deploy.strategy);
                    // The way out of trouble runs no hooks of the build it leaves.
                    d.hooks = Default::default();
                    d
                }
            },
            phase: Phase::Queued,
            step: 0,
            step_started: now,
            green_since: None,
            started: now,
            deadline: req
                .timeout_secs
                .map(|s| now + chrono::Duration::seconds(s.min(86_400 * 7) as i64)),
            abort: None,
            timed_out: false,
            kind,
            note: None,
            overdue: false,
            ledger_only: false,
        };
        let id = store
            .begin_keyed(
                &Deployment {
                    id: 0,
                    app: spec.app().to_string(),
                    env: spec.environment.clone(),
                    fleet: spec.name.clone(),
                    build: build.id.clone(),
                    label: build.label.clone(),
                    outcome: Outcome::InProgress,
                    reason: None,
                    started_at: now,
                    finished_at: None,
                },
                key.map(|k| (k, request.as_str())),
                |id| {
                    rollout.id = id;
                    Ok(serde_json::to_string(&rollout)?)
                },
            )
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        let what = match kind {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
        };
        let msg = match queued_behind {
            Some(other) => format!(
                "{what} of {} to {} accepted; queued behind rollout #{other}",
                build.id, spec.name
            ),
            None => format!("{what} of {} to {} accepted", build.id, spec.name),
        };
        let _ = store.add_event(id, now, &msg);
        tracing::info!(fleet = %spec.name, rollout = id, build = %build.id, "{msg}");
        Ok(Accepted::Started {
            id,
            fleet: spec.name.clone(),
            queued_behind,
            existing: false,
        })
    }

    pub fn request_approval(
        &mut self,
        req: &ApproveRequest,
        now: DateTime<Utc>,
    ) -> Result<Approval, Refusal> {
        let store = self.store.clone();
        let spec = self
            .config
            .fleets
            .iter()
            .find(|f| f.name == req.fleet || f.app() == req.fleet)
            .ok_or_else(|| Refusal::NotFound(format!("no fleet or app named '{}'", req.fleet)))?
            .clone();
        if req.by.trim().is_empty() {
            return Err(Refusal::Refused(
                "an approval needs a name: --by NAME".into(),
            ));
        }
        let build = Build::parse(&spec, &req.build, None).map_err(Refusal::Refused)?;
        let approval = Approval {
            app: spec.app().to_string(),
            build: build.id.clone(),
            by: req.by.clone(),
            at: now,
        };
        store
            .approve(&approval)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        tracing::info!(app = %spec.app(), build = %build.id, by = %req.by, "approval recorded");
        Ok(approval)
    }

    /// Abort a rollout (the CLI's --timeout): it rolls back.
    pub fn request_abort(&mut self, id: i64, reason: &str) -> Result<(), Refusal> {
        let store = self.store.clone();
        let Some((active, mut r)) = store
            .rollout(id)
            .map_err(|e| Refusal::Internal(e.to_string()))?
        else {
            return Err(Refusal::NotFound(format!("no rollout #{id}")));
        };
        if !active {
            return Ok(());
        }
        r.abort = Some(reason.to_string());
        if reason.contains("timeout") {
            r.timed_out = true;
        }
        let body = serde_json::to_string(&r).map_err(|e| Refusal::Internal(e.to_string()))?;
        store
            .save_rollout(id, true, &body)
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(())
    }
}

/// A client's idempotency key, checked: 1 to 128 printable ASCII characters.
fn idempotency_key(k: &str) -> Result<&str, Refusal> {
    if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::Refused(format!(
            "idempotency key {k:?} is not 1 to 128 printable ASCII characters without spaces"
        )));
    }
    Ok(k)
}

/// What an idempotency key is stored with: the fleet, environment and build it admitted.
fn request_of(spec: &crate::manifest::FleetSpec, build: &Build) -> String {
    format!("{} {} {}", spec.name, spec.environment, build.id)
}

/// A deploy that repeats one already admitted: `(rollout, found by its key)`. The rollout
/// its idempotency key names (refused if the key was used for another deploy), or the
/// rollout already taking this build to the fleet (not aborted, not rolling back). The
/// one rule `request_deploy` and `check_launchable` share.
fn admitted_before(
    store: &Store,
    spec: &crate::manifest::FleetSpec,
    build: &Build,
    key: Option<&str>,
    active: &[Rollout],
) -> Result<Option<(i64, bool)>, Refusal> {
    if let Some(k) = key {
        if let Some((id, was)) = store
            .idempotency_key(k)
            .map_err(|e| Refusal::Internal(e.to_string()))?
        {
            let request = request_of(spec, build);
            if was != request {
                return Err(Refusal::Refused(format!(
                    "idempotency key {k} was used for another deploy (rollout #{id}: {was}); use a new key for this one"
                )));
            }
            return Ok(Some((id, true)));
        }
    }
    Ok(active
        .iter()
        .find(|r| {
            r.kind == Kind::Deploy
                && r.to.id == build.id
                && r.abort.is_none()
                && !matches!(r.phase, Phase::RollingBack { .. })
        })
        .map(|r| (r.id, false)))
}
