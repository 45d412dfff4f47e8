//! The reconciler: a thin shell around [`decide`]. Observe from watch caches, decide, write the
//! status (the commit point), record Events, then converge the cluster to the desired state,
//! writing only what differs from the cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, info_span, warn};

use super::decide::{
    Decision, Observations, Request, RequestAction, Transition, Workload, check_due, decide, hooks_due,
};
use super::resources::{self, Names, ResourceError};
use super::revision::template_revision;
use crate::api::{OutboxEntry, Rollout, RolloutStatus, WebhookType, labels};
use crate::duration::parse_duration;
use crate::metrics::MetricSource;
use crate::notify::Notifier;
use crate::traffic::smi::{SmiTrafficSplit, choose_version, served_versions};
use crate::traffic::{TrafficError, TrafficRouter};
use crate::webhooks::{Payload, Webhooks};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The field manager for every write, and the Events' reporting controller.
pub const MANAGER: &str = "serin";
/// The finalizer that hands the app back when a Rollout is deleted.
pub const FINALIZER: &str = "serin.dev/cleanup";
/// Annotation on a root Service that existed before Serin adopted it.
pub const ADOPTED: &str = "serin.dev/adopted";
/// Requeue when nothing time-based is pending: a safety net, the watches do the real work.
const RESYNC: Duration = Duration::from_secs(300);
/// How long one check may wait for its metrics.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many event-hook and notification tasks run at once; more wait their turn.
const SIDE_EFFECTS: usize = 16;

/// What went wrong while reconciling one Rollout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Resource(#[from] ResourceError),
    #[error("{0}")]
    Traffic(#[from] TrafficError),
    #[error("Rollout has no namespace")]
    NoNamespace,
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    /// Not a failure: deletion waits for the app to be ready before handing traffic back, and
    /// the finalizer stays until it returns Ok.
    #[error("handing the app back: {0}")]
    HandingBack(String),
    #[error("{0}")]
    Webhooks(#[from] crate::webhooks::WebhookError),
    #[error("{0}")]
    Notify(#[from] crate::notify::NotifyError),
}

/// Options for [`run`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch only these namespaces; all namespaces when empty.
    pub namespaces: Vec<String>,
    /// Identity of this process in Events.
    pub instance: Option<String>,
    /// Metrics, traces and readiness (see [`crate::telemetry`]).
    pub telemetry: crate::telemetry::Telemetry,
    /// Sends notifications (the Rollouts' and the global receivers of `--notifications`). When
    /// `None`, one without global receivers is made.
    pub notifier: Option<Notifier>,
}

/// Shared state of the controller.
pub struct Context {
    client: Client,
    deployments: Store<Deployment>,
    autoscalers: Store<HorizontalPodAutoscaler>,
    services: Store<Service>,
    splits: Store<DynamicObject>,
    served_split_versions: Vec<String>,
    default_router: SmiTrafficSplit,
    metrics: Arc<dyn MetricSource>,
    instance: String,
    telemetry: crate::telemetry::Telemetry,
    caches: super::caches::Synced,
    webhooks: Webhooks,
    notifier: Notifier,
    side_effects: Arc<tokio::sync::Semaphore>,
}

impl Context {
    /// Waits until every watch cache has finished its first list. Instant once they have.
    async fn wait_for_caches(&self) {
        self.caches.wait().await;
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until the process is stopped.
///
/// With a list of namespaces, each namespace gets a controller of its own (its own watches,
/// caches and work queue), all in this process. They do not share a cache: a cache fed by
/// several namespaces' watches would be replaced whole by each namespace's (re)list, dropping
/// the other namespaces' objects until their next event. A controller needs only the
/// permissions of its own namespace, so a Role per namespace is enough.
pub async fn run(client: Client, options: Options, metrics: Arc<dyn MetricSource>) -> Result<(), Error> {
    let served = served_versions(&client).await?;
    let version = choose_version(crate::api::SmiVersion::Auto, &served)?;
    let default_router = SmiTrafficSplit::new(version).ok_or(TrafficError::NoTrafficSplit)?;
    info!(served = ?served, writing = version, "discovered TrafficSplit versions");
    let instance = options.instance.clone().unwrap_or_else(|| format!("pid-{}", std::process::id()));
    let scopes: Vec<Option<&str>> = if options.namespaces.is_empty() {
        info!("watching all namespaces");
        vec![None]
    } else {
        info!(namespaces = ?options.namespaces, "watching namespaces");
        options.namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    };
    options.telemetry.health().expect_scopes(scopes.len());
    // One webhook client, notifier and side-effect budget for every namespace.
    let webhooks = Webhooks::new(client.clone())?;
    let notifier = match options.notifier.clone() {
        Some(notifier) => notifier,
        None => Notifier::new(client.clone(), Vec::new())?,
    };
    let side_effects = Arc::new(tokio::sync::Semaphore::new(SIDE_EFFECTS));
    let controllers = scopes.into_iter().map(|ns| {
        let shared = Shared {
            client: client.clone(),
            served: served.clone(),
            default_router: default_router.clone(),
            metrics: metrics.clone(),
            instance: instance.clone(),
            telemetry: options.telemetry.clone(),
            webhooks: webhooks.clone(),
            notifier: notifier.clone(),
            side_effects: side_effects.clone(),
        };
        controller(shared, ns)
    });
    futures::future::join_all(controllers).await;
    Ok(())
}

/// What every namespace's controller shares.
struct Shared {
    client: Client,
    served: Vec<String>,
    default_router: SmiTrafficSplit,
    metrics: Arc<dyn MetricSource>,
    instance: String,
    telemetry: crate::telemetry::Telemetry,
    webhooks: Webhooks,
    notifier: Notifier,
    side_effects: Arc<tokio::sync::Semaphore>,
}

/// Runs one controller over `ns` (all namespaces when `None`) until the process is stopped.
async fn controller(shared: Shared, ns: Option<&str>) {
    let Shared {
        client,
        served,
        default_router,
        metrics,
        instance,
        telemetry,
        webhooks,
        notifier,
        side_effects,
    } = shared;
    let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let (deployments, deployment_writer) = reflector::store();
    let deployment_stream =
        reflector(deployment_writer, watcher(api::<Deployment>(&client, ns), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let (autoscalers, autoscaler_writer) = reflector::store();
    let autoscaler_stream = reflector(
        autoscaler_writer,
        watcher(api::<HorizontalPodAutoscaler>(&client, ns), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let (services, service_writer) = reflector::store();
    let service_stream = reflector(service_writer, watcher(api::<Service>(&client, ns), managed.clone()))
        .default_backoff()
        .touched_objects();
    let split_resource = default_router.api_resource();
    let split_api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &split_resource),
        None => Api::all_with(client.clone(), &split_resource),
    };
    let split_writer = Writer::new(split_resource.clone());
    let splits = split_writer.as_reader();
    let split_stream =
        reflector(split_writer, watcher(split_api, managed)).default_backoff().touched_objects();

    // One waiter for the stores; any number of reconciles wait on `caches` (see `caches.rs`).
    let stores = (deployments.clone(), autoscalers.clone(), services.clone(), splits.clone());
    let caches = super::caches::Synced::spawn(async move {
        let _ = futures::join!(
            stores.0.wait_until_ready(),
            stores.1.wait_until_ready(),
            stores.2.wait_until_ready(),
            stores.3.wait_until_ready(),
        );
    });
    let context = Arc::new(Context {
        client: client.clone(),
        deployments,
        autoscalers,
        services,
        splits,
        served_split_versions: served,
        default_router,
        metrics,
        instance,
        telemetry: telemetry.clone(),
        caches: caches.clone(),
        webhooks,
        notifier,
        side_effects,
    });

    // The Rollout watch, as `Controller::new` builds it, with its first list reported to
    // readiness (the controller is the only waiter on this store).
    let (rollouts, rollout_writer) = reflector::store();
    let rollout_trigger =
        reflector(rollout_writer, watcher(api::<Rollout>(&client, ns), watcher::Config::default()))
            .inspect(telemetry.on_rollouts_listed())
            .applied_objects();
    let controller = Controller::for_stream(rollout_trigger, rollouts.clone());
    telemetry.track(rollouts.clone(), caches);
    let rollouts_for_hpa = rollouts.clone();
    controller
        .watches_stream(deployment_stream, move |deployment: Deployment| {
            // The primary maps through its owner; the user's Deployment through targetRef.
            let ns = deployment.namespace();
            let name = deployment.name_any();
            rollouts
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace() == ns && (r.spec.target_ref.name == name || Names::of(r).primary == name)
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .owns_stream(service_stream)
        .watches_stream(autoscaler_stream, {
            let rollouts = rollouts_for_hpa.clone();
            move |hpa: HorizontalPodAutoscaler| {
                // An HPA of the user's Deployment, or the primary HPA Serin owns.
                let ns = hpa.namespace();
                let target = hpa.spec.as_ref().map(|s| s.scale_target_ref.name.clone()).unwrap_or_default();
                rollouts
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace() == ns
                            && (r.spec.target_ref.name == target || Names::of(r).primary == target)
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            }
        })
        .owns_stream_with(split_stream, split_resource)
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            use kube::runtime::controller::Error as ControllerError;
            match result {
                Ok(_) => {}
                // Progress of a deletion, and Rollouts gone between trigger and reconcile.
                Err(ControllerError::ReconcilerFailed(Error::Finalizer(inner), _))
                    if matches!(
                        inner.as_ref(),
                        kube::runtime::finalizer::Error::CleanupFailed(Error::HandingBack(_))
                    ) => {}
                Err(ControllerError::ObjectNotFound(object)) => debug!(%object, "gone before reconcile"),
                Err(ControllerError::ReconcilerFailed(error, object)) => {
                    warn!(rollout = %object.name, namespace = %object.namespace.as_deref().unwrap_or_default(), %error, "reconcile failed")
                }
                Err(err) => warn!(error = %err, "reconcile failed"),
            }
        })
        .await;
}

fn error_policy(rollout: Arc<Rollout>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Finalizer(inner) = error
        && let kube::runtime::finalizer::Error::CleanupFailed(Error::HandingBack(why)) = inner.as_ref()
    {
        info!(rollout = %rollout.name_any(), namespace = %rollout.namespace().unwrap_or_default(), "{why}");
        return Action::requeue(Duration::from_secs(1));
    }
    ctx.telemetry.reconcile_failed(error);
    warn!(rollout = %rollout.name_any(), namespace = %rollout.namespace().unwrap_or_default(), %error, "will retry");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = rollout.namespace().ok_or(Error::NoNamespace)?;
    let span = info_span!("reconcile", rollout = %rollout.name_any(), namespace = %ns);
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, rollout, |event| async {
        match event {
            Finalizer::Apply(rollout) => apply(&rollout, &ctx).await,
            Finalizer::Cleanup(rollout) => cleanup(&rollout, &ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

// ----- observe ----------------------------------------------------------------------------------

fn deployment(ctx: &Context, ns: &str, name: &str) -> Option<Arc<Deployment>> {
    ctx.deployments.get(&ObjectRef::new(name).within(ns))
}

/// All replicas updated and available for the current generation.
fn deployment_ready(d: &Deployment) -> bool {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &d.status else { return false };
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    observed
        && desired > 0
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.available_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) == desired
}

/// The Deployment controller's own verdict that a rollout cannot progress.
fn deployment_failure(d: &Deployment) -> Option<String> {
    let conditions = d.status.as_ref()?.conditions.as_ref()?;
    let progressing = conditions.iter().find(|c| c.type_ == "Progressing")?;
    (progressing.status == "False" && progressing.reason.as_deref() == Some("ProgressDeadlineExceeded")).then(
        || {
            format!(
                "Deployment {} exceeded its progress deadline: {}",
                d.name_any(),
                progressing.message.as_deref().unwrap_or("")
            )
        },
    )
}

fn target_workload(d: &Deployment) -> Workload {
    let spec = d.spec.as_ref();
    Workload {
        revision: spec.map(|s| template_revision(&s.template)).unwrap_or_default(),
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        ready: deployment_ready(d),
        failure: deployment_failure(d),
    }
}

fn primary_workload(d: &Deployment) -> Workload {
    Workload {
        revision: d.annotations().get(labels::REVISION).cloned().unwrap_or_default(),
        replicas: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        ready: deployment_ready(d),
        failure: None,
    }
}

fn request(rollout: &Rollout) -> Option<Request> {
    let value = rollout.annotations().get(labels::REQUEST)?;
    let action = RequestAction::parse(value.split('/').next()?)?;
    Some(Request { id: value.clone(), action })
}

async fn observe(rollout: &Rollout, ctx: &Context, ns: &str, now: Timestamp) -> Observations {
    let names = Names::of(rollout);
    let status = rollout.status.clone().unwrap_or_default();
    let mut obs = Observations {
        generation: rollout.metadata.generation,
        target: deployment(ctx, ns, &names.root).map(|d| target_workload(&d)),
        primary: deployment(ctx, ns, &names.primary).map(|d| primary_workload(&d)),
        gates: None,
        metrics: None,
        request: request(rollout),
        hooks: Vec::new(),
    };
    let metrics = async {
        let analysis = rollout.spec.analysis.as_ref()?;
        if !check_due(&rollout.spec, &status, now) {
            return None;
        }
        let window = analysis.window.as_deref().unwrap_or(&rollout.spec.strategy.interval);
        let window = parse_duration(window).unwrap_or(Duration::from_secs(60));
        // Bounded: a source that hangs (or a client retrying 503s) must not stall the
        // rollout; no answer in time is no data.
        match tokio::time::timeout(METRICS_TIMEOUT, ctx.metrics.fetch(rollout, window)).await {
            Ok(Ok(metrics)) => Some(metrics),
            Ok(Err(error)) => {
                warn!(%error, "no metrics for this check; the decision core treats it as insufficient data");
                None
            }
            Err(_) => {
                warn!(timeout = ?METRICS_TIMEOUT, "the metric source did not answer in time; insufficient data");
                None
            }
        }
    };
    // The webhooks due now, concurrently; each is bounded by its own timeout and retries.
    let due = hooks_due(&rollout.spec, &status, &obs, now);
    let hooks = futures::future::join_all(due.into_iter().map(|hook| {
        let payload = Payload::new(rollout, &status, hook.type_);
        async move {
            let outcome = ctx.webhooks.call(rollout, hook, &payload).await;
            info!(
                hook = %outcome.name, type_ = ?outcome.type_, ok = outcome.ok, code = ?outcome.code,
                attempts = outcome.attempts, message = %outcome.message, "webhook called"
            );
            outcome
        }
    }));
    let (metrics, hooks) = futures::join!(metrics, hooks);
    obs.gates = rollout
        .spec
        .analysis
        .as_ref()
        .zip(metrics.as_ref())
        .map(|(analysis, window)| crate::metrics::gates::evaluate(analysis, window, now));
    obs.metrics = metrics;
    obs.hooks = hooks;
    obs
}

// ----- decide and act ---------------------------------------------------------------------------

async fn apply(rollout: &Rollout, ctx: &Context) -> Result<Action, Error> {
    let ns = rollout.namespace().ok_or(Error::NoNamespace)?;
    // Decide only on complete caches: right after a start, a Deployment missing from a cache
    // that has not listed yet would look deleted, and the primary would be resized from a guess.
    ctx.wait_for_caches().await;
    let now = Timestamp::now();
    let observations = observe(rollout, ctx, &ns, now).await;
    let old = rollout.status.clone().unwrap_or_default();
    let mut decision = decide(&rollout.spec, &old, &observations, now);

    let router = router_for(rollout, ctx)?;
    decision.status.traffic_split_version = Some(router.version().to_string());
    // The transitions go into the status in the same write as the state they describe (the
    // commit point); their Events, event webhooks and notifications follow, and a second write
    // empties the outbox. A stop in between leaves them in the outbox for the next reconcile.
    let pending = enqueue(&mut decision.status, &decision.events, now);
    if decision.status != old {
        write_status(rollout, ctx, &ns, &decision.status).await?;
    }
    ctx.telemetry.decided(rollout, &old, &observations, &decision, now);
    if !decision.status.outbox.is_empty() {
        if pending < decision.status.outbox.len() {
            info!(
                transitions = decision.status.outbox.len() - pending,
                "sending transitions left from an earlier reconcile"
            );
        }
        record(rollout, ctx, &decision.status.outbox).await;
        tell(rollout, ctx, &decision.status);
        decision.status.outbox.clear();
        write_status(rollout, ctx, &ns, &decision.status).await?;
    }
    converge(rollout, ctx, &ns, &decision, &router).await?;
    Ok(decision.requeue_after.map_or(Action::requeue(RESYNC), Action::requeue))
}

/// Numbers the decision's transitions and appends them to the status's outbox, after any left
/// from an earlier reconcile. Returns how many it added.
fn enqueue(status: &mut RolloutStatus, transitions: &[Transition], now: Timestamp) -> usize {
    for transition in transitions {
        status.transitions += 1;
        status.outbox.push(OutboxEntry {
            seq: status.transitions,
            reason: transition.reason.clone(),
            message: transition.message.clone(),
            warning: transition.warning,
            at: Time(now),
        });
    }
    transitions.len()
}

/// The Event of outbox entry `seq`: named after the Rollout's uid and the sequence number, so
/// sending an entry again (after a stop) finds it recorded instead of recording it twice.
fn event_name(rollout: &Rollout, seq: i64) -> String {
    let uid = rollout.uid().unwrap_or_default();
    let short: String = uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    format!("{}.{short}.{seq}", rollout.name_any())
}

fn router_for(rollout: &Rollout, ctx: &Context) -> Result<SmiTrafficSplit, Error> {
    let version = choose_version(rollout.spec.traffic.smi.version, &ctx.served_split_versions)?;
    Ok(SmiTrafficSplit::new(version).unwrap_or_else(|| ctx.default_router.clone()))
}

async fn write_status(
    rollout: &Rollout,
    ctx: &Context,
    ns: &str,
    status: &RolloutStatus,
) -> Result<(), Error> {
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"apiVersion": "serin.dev/v1alpha1", "kind": "Rollout", "status": status});
    api.patch_status(&rollout.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Records one Event per transition. Each transition gets an Event object of its own (no
/// series aggregation), so `kubectl describe` and tests see every step exactly as it happened.
/// An Event that already exists was recorded before a stop; it is not recorded again.
async fn record(rollout: &Rollout, ctx: &Context, outbox: &[OutboxEntry]) {
    let Some(ns) = rollout.namespace() else { return };
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ctx.client.clone(), &ns);
    let regarding = rollout.object_ref(&());
    for entry in outbox {
        info!(reason = %entry.reason, note = %entry.message, seq = entry.seq, "transition");
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": event_name(rollout, entry.seq), "namespace": ns},
            "eventTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(entry.at.0),
            "reportingController": format!("serin.dev/{MANAGER}"),
            "reportingInstance": ctx.instance,
            "action": "Reconcile",
            "reason": entry.reason,
            "note": entry.message,
            "type": if entry.warning { "Warning" } else { "Normal" },
            "regarding": regarding,
        });
        let result = match serde_json::from_value(event) {
            Ok(event) => events.create(&Default::default(), &event).await.map(|_| ()),
            Err(err) => Err(kube::Error::SerdeError(err)),
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(seq = entry.seq, "Event already recorded before a stop");
            }
            Err(error) => warn!(%error, "could not record an Event"),
        }
    }
}

/// Tells the event webhooks and the notification receivers about the decision's transitions,
/// after the status is written. Spawned, so a slow receiver never holds up a rollout; at most
/// [`SIDE_EFFECTS`] such tasks run at once. Best effort: failures are logged.
fn tell(rollout: &Rollout, ctx: &Context, status: &RolloutStatus) {
    let events: Vec<Transition> = status
        .outbox
        .iter()
        .map(|e| Transition { reason: e.reason.clone(), message: e.message.clone(), warning: e.warning })
        .collect();
    if events.is_empty() {
        return;
    }
    let event_hooks: Vec<_> =
        rollout.spec.webhooks.iter().filter(|h| h.type_ == WebhookType::Event).cloned().collect();
    let notifies = !rollout.spec.notifications.is_empty() || !ctx.notifier.global().is_empty();
    if event_hooks.is_empty() && !notifies {
        return;
    }
    let (rollout, status) = (rollout.clone(), status.clone());
    let (webhooks, notifier, limit) = (ctx.webhooks.clone(), ctx.notifier.clone(), ctx.side_effects.clone());
    let span = info_span!("tell", rollout = %rollout.name_any(), namespace = %rollout.namespace().unwrap_or_default());
    tokio::spawn(
        async move {
            let Ok(_permit) = limit.acquire_owned().await else { return };
            let hooks = async {
                // In transition order, each hook told about each transition.
                for transition in &events {
                    for hook in &event_hooks {
                        let payload = Payload::new(&rollout, &status, WebhookType::Event)
                            .with_event(&transition.reason, &transition.message);
                        let outcome = webhooks.call(&rollout, hook, &payload).await;
                        if outcome.ok {
                            debug!(hook = %hook.name, reason = %transition.reason, "event webhook told");
                        } else {
                            warn!(hook = %hook.name, reason = %transition.reason, message = %outcome.message, "event webhook failed");
                        }
                    }
                }
            };
            let notes = async {
                if notifies {
                    for delivery in notifier.notify(&rollout, &status, &events).await {
                        if delivery.ok {
                            info!(receiver = %delivery.receiver, kind = ?delivery.kind, "notification sent");
                        } else {
                            warn!(receiver = %delivery.receiver, kind = ?delivery.kind, message = %delivery.message, "notification failed");
                        }
                    }
                }
            };
            futures::join!(hooks, notes);
        }
        .instrument(span),
    );
}

async fn converge(
    rollout: &Rollout,
    ctx: &Context,
    ns: &str,
    decision: &Decision,
    router: &SmiTrafficSplit,
) -> Result<(), Error> {
    let names = Names::of(rollout);
    let Some(target) = deployment(ctx, ns, &names.root) else { return Ok(()) };
    let desired = &decision.desired;
    let apply = PatchParams::apply(MANAGER).force();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);

    // Services: root and primary select the primary's pods, canary the user's.
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for mut svc in resources::services(rollout, &target)? {
        let name = svc.name_any();
        let cached = ctx.services.get(&ObjectRef::new(&name).within(ns));
        // A root Service that existed before Serin (not yet in the managed cache) is adopted,
        // and marked so it can be handed back.
        let adopted = match &cached {
            Some(existing) => existing.annotations().contains_key(ADOPTED),
            None if name == names.root => services.get_opt(&name).await?.is_some(),
            None => false,
        };
        if adopted {
            svc.metadata.annotations = Some(BTreeMap::from([(ADOPTED.to_string(), "true".to_string())]));
        }
        if cached.as_deref().is_none_or(|c| !service_matches(c, &svc)) {
            services.patch(&name, &apply, &Patch::Apply(&svc)).await?;
        }
    }

    // The primary runs the desired revision's template.
    let target_revision = target.spec.as_ref().map(|s| template_revision(&s.template));
    let primary = deployment(ctx, ns, &names.primary);
    match (&desired.primary_revision, &primary) {
        (Some(rev), _) if Some(rev) == target_revision.as_ref() => {
            let current = primary.as_deref().map(primary_workload);
            if current.as_ref().is_none_or(|p| &p.revision != rev || p.replicas != desired.primary_replicas) {
                let object = resources::primary_deployment(rollout, &target, rev, desired.primary_replicas)?;
                deployments.patch(&names.primary, &apply, &Patch::Apply(&object)).await?;
            }
        }
        (Some(rev), Some(p)) if p.annotations().get(labels::REVISION) == Some(rev) => {
            let replicas = p.spec.as_ref().and_then(|s| s.replicas);
            if replicas != Some(desired.primary_replicas) {
                scale(&deployments, &names.primary, desired.primary_replicas).await?;
            }
        }
        (Some(rev), _) => {
            warn!(revision = %rev, "the primary does not run the promoted revision and the target has moved on; leaving it")
        }
        (None, _) => {}
    }

    // Traffic, written only when the observed split differs (hand edits are put back).
    let rendered = router.render(rollout, &names, desired.canary_weight)?;
    let observed = ctx.splits.get(&ObjectRef::new_with(&names.root, router.api_resource()).within(ns));
    if observed.as_deref().is_none_or(|o| !router.in_sync(o, &rendered)) {
        let splits: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &router.api_resource());
        splits.patch(&names.root, &apply, &Patch::Apply(&rendered)).await?;
    }

    // An HPA on the user's Deployment gets a twin for the primary, and owns the canary's size
    // once the canary runs: Serin only scales the canary from and to zero then.
    let user_hpa = autoscaler_of(ctx, ns, &names.root);
    if let Some(hpa) = &user_hpa {
        let twin = resources::primary_autoscaler(rollout, hpa)?;
        let cached = autoscaler_of(ctx, ns, &names.primary);
        if cached.as_deref().and_then(|c| c.spec.as_ref()) != twin.spec.as_ref() {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
            api.patch(&names.primary, &apply, &Patch::Apply(&twin)).await?;
        }
    }

    // The user's Deployment runs the canary: scaled up during analysis, down otherwise.
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let autoscaled = user_hpa.is_some() && replicas > 0 && desired.canary_replicas > 0;
    if replicas != desired.canary_replicas && !autoscaled {
        scale(&deployments, &names.root, desired.canary_replicas).await?;
    }
    Ok(())
}

/// The HPA in `ns` that scales Deployment `name`, if any.
fn autoscaler_of(ctx: &Context, ns: &str, name: &str) -> Option<Arc<HorizontalPodAutoscaler>> {
    ctx.autoscalers.state().into_iter().find(|h| {
        h.namespace().as_deref() == Some(ns)
            && h.spec
                .as_ref()
                .is_some_and(|s| s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == name)
    })
}

fn service_matches(existing: &Service, desired: &Service) -> bool {
    let (Some(a), Some(b)) = (&existing.spec, &desired.spec) else { return false };
    let ports = |s: &k8s_openapi::api::core::v1::ServiceSpec| {
        s.ports.iter().flatten().map(|p| (p.name.clone(), p.port, p.target_port.clone())).collect::<Vec<_>>()
    };
    a.selector == b.selector
        && ports(a) == ports(b)
        && existing.owner_references().iter().any(|o| o.controller == Some(true) && o.kind == "Rollout")
}

async fn scale(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<(), Error> {
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

// ----- deletion ---------------------------------------------------------------------------------

/// Hands the app back when its Rollout is deleted: the user's Deployment scales up again, the
/// root Service selects its pods and loses its owner (so it survives), and the TrafficSplit
/// goes. The primary and the primary/canary Services are garbage-collected with the Rollout.
async fn cleanup(rollout: &Rollout, ctx: &Context) -> Result<Action, Error> {
    let ns = rollout.namespace().ok_or(Error::NoNamespace)?;
    ctx.wait_for_caches().await;
    let names = Names::of(rollout);
    let Some(target) = deployment(ctx, &ns, &names.root) else { return Ok(Action::await_change()) };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let primary_replicas = deployment(ctx, &ns, &names.primary)
        .and_then(|p| p.spec.as_ref().and_then(|s| s.replicas))
        .unwrap_or(1)
        .max(1);
    let replicas = target.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if replicas == 0 {
        scale(&deployments, &names.root, primary_replicas).await?;
        return Err(Error::HandingBack(format!(
            "scaled Deployment {} back to {primary_replicas}",
            names.root
        )));
    }
    let waited = rollout
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.duration_until(Timestamp::now()).as_secs())
        .unwrap_or(0);
    if !deployment_ready(&target) && waited < i64::from(rollout.spec.progress_deadline_seconds) {
        return Err(Error::HandingBack(format!("waiting for Deployment {} to become ready", names.root)));
    }

    // The root Service keeps existing, selecting the app's pods, owned by nobody.
    let selector = resources::target_selector(&target)?;
    let mut root = resources::service(rollout, &names.root, selector)?;
    root.metadata.owner_references = None;
    root.metadata.labels = None;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    services.patch(&names.root, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&root)).await?;

    let router = router_for(rollout, ctx)?;
    let splits: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &router.api_resource());
    if splits.get_opt(&names.root).await?.is_some() {
        splits.delete(&names.root, &Default::default()).await?;
    }
    info!("handed the app back: Deployment {} serves all traffic", names.root);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(reason: &str) -> Transition {
        Transition { reason: reason.to_string(), message: format!("{reason} happened"), warning: false }
    }

    #[test]
    fn transitions_are_numbered_after_those_left_in_the_outbox() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut status = RolloutStatus::default();
        assert_eq!(enqueue(&mut status, &[transition("NewRevision")], now), 1);
        // A stop before the outbox was emptied: the next decision's transitions follow it.
        assert_eq!(enqueue(&mut status, &[transition("StepAdvanced"), transition("CheckPassed")], now), 2);
        let seqs: Vec<(i64, &str)> = status.outbox.iter().map(|e| (e.seq, e.reason.as_str())).collect();
        assert_eq!(seqs, [(1, "NewRevision"), (2, "StepAdvanced"), (3, "CheckPassed")]);
        assert_eq!(status.transitions, 3);
        // Emptied, the numbering goes on: Event names never repeat for one Rollout.
        status.outbox.clear();
        enqueue(&mut status, &[transition("Promoted")], now);
        assert_eq!(status.outbox[0].seq, 4);
        assert_eq!(enqueue(&mut status, &[], now), 0);
    }

    #[test]
    fn event_names_are_the_rollout_its_uid_and_the_sequence_number() {
        let mut rollout: Rollout = serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "3f2a9c4e-1b7d-4e8f-9a0b-c1d2e3f4a5b6"},
            "spec": {"targetRef": {"name": "web"}, "service": {"port": 80}}
        }))
        .unwrap();
        assert_eq!(event_name(&rollout, 7), "web.3f2a9c4e.7");
        // A Rollout recreated under the same name gets a new uid, so its Events do not collide
        // with the old one's.
        rollout.metadata.uid = Some("0b1c2d3e-0000-4000-8000-000000000000".into());
        assert_ne!(event_name(&rollout, 7), "web.3f2a9c4e.7");
    }
}
