//! One run's world: its own database (from `#[sqlx::test]`), storage root,
//! Redis server and queue prefix, the sentinel folder outside the root, the
//! simulator's model, and the worker fleet. Also the instruments the oracle
//! reads: triggers that record every image deletion with the transaction
//! that made it, and which job's progress that transaction committed.

use std::sync::Mutex;
use std::time::Duration;

use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;

use crate::files::Sentinel;
use crate::fleet::{Fleet, WORKERS};
use crate::harness::{Env, PrivateRedis};
use crate::model::Model;
use crate::plan::{fork, Plan, Rng};

/// The orphan sweeps' grace period. The simulator always commits a row
/// well within it of writing the row's file.
pub const MIN_AGE: Duration = Duration::from_secs(2);
/// Folders inside `photos/` that are symlinks to the sentinel's secrets.
pub const LINKED_FOLDERS: usize = 2;
/// Postgres ends a worker's session that sits this long in a transaction
/// (so a SIGSTOPped worker's locks go; see `faults`). Given to each worker
/// as `JANITOR_IDLE_TRANSACTION_TIMEOUT`: janitor sends it as a startup
/// option, which overrides any `ALTER DATABASE … SET`. The simulator's and
/// the oracle's sessions never sit in a transaction and need none.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The application name the workers' sessions carry, so faults can find them.
pub const WORKER_APP: &str = "janitor-worker";
const APP: &str = "chaos-app";

pub struct World {
    pub env: Env,
    pub plan: Plan,
    pub sentinel: Sentinel,
    pub producer: Producer,
    pub model: Mutex<Model>,
    /// How the simulator's own connections connect.
    pub app: PgConnectOptions,
    pub redis: tokio::sync::Mutex<PrivateRedis>,
    pub fleet: tokio::sync::Mutex<Fleet>,
}

impl World {
    pub async fn new(pool: PgPool, plan: Plan, rng: &mut Rng) -> Self {
        let redis = PrivateRedis::start().await;
        let env = Env::with_redis(pool, redis.url());
        instrument(&env.pool).await;
        let sentinel = Sentinel::new();
        for i in 0..LINKED_FOLDERS {
            crate::files::symlink(&sentinel.path().join("secrets"), &env.store.path(&format!("photos/ld{i}")))
                .expect("plant a symlinked folder");
        }
        let client = redis::Client::open(env.redis_url.as_str()).unwrap();
        let producer = Producer::connect(env.pool.clone(), client, Layout::new(&env.prefix))
            .await
            .expect("the private redis is reachable");
        let app = env.pool.connect_options().as_ref().clone().application_name(APP);
        let mut url = url::Url::parse(&crate::support::database_url(&env.pool)).unwrap();
        url.query_pairs_mut().append_pair("application_name", WORKER_APP);
        let mut fleet = Fleet::new(fork(rng), url.to_string());
        for _ in 0..WORKERS {
            fleet.start(&env);
        }
        let mut model = Model::default();
        for i in 0..LINKED_FOLDERS {
            model.files.insert(format!("photos/ld{i}"), crate::model::FileRec { kind: "linked-folder" });
        }
        Self {
            env,
            plan,
            sentinel,
            producer,
            model: Mutex::new(model),
            app,
            redis: tokio::sync::Mutex::new(redis),
            fleet: tokio::sync::Mutex::new(fleet),
        }
    }

    pub fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().expect("the model lock is never poisoned")
    }

    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::ConnectOptions as _;
        self.app.connect().await.expect("the simulator connects to its database")
    }
}

/// The oracle's instruments.
async fn instrument(pool: &PgPool) {
    let statements = [
        // One row per deleted image, written in the deleting transaction (so
        // only committed deletions stay), with the tasks that referenced the
        // image at that moment: BEFORE DELETE, so ON DELETE SET NULL has not
        // cleared them yet.
        "CREATE TABLE chaos_deletions (
            image_id bigint, storage_path text, file_size bigint, txid bigint, app text,
            at timestamptz, users jsonb)",
        "CREATE INDEX ON chaos_deletions (txid)",
        "CREATE FUNCTION chaos_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO chaos_deletions VALUES (OLD.id, OLD.storage_path, OLD.file_size, txid_current(),
                 current_setting('application_name'), clock_timestamp(),
                 (SELECT coalesce(jsonb_agg(jsonb_build_object('task', t.id, 'status', t.status,
                      'completed_at', t.completed_at,
                      'columns', array_remove(ARRAY[
                          CASE WHEN t.husband_photo_id = OLD.id THEN 'husband_photo_id' END,
                          CASE WHEN t.wife_photo_id = OLD.id THEN 'wife_photo_id' END,
                          CASE WHEN t.template_id = OLD.id THEN 'template_id' END,
                          CASE WHEN t.result_image_id = OLD.id THEN 'result_image_id' END], NULL))), '[]')
                  FROM face_swap_tasks t
                  WHERE t.husband_photo_id = OLD.id OR t.wife_photo_id = OLD.id
                     OR t.template_id = OLD.id OR t.result_image_id = OLD.id));
             RETURN OLD;
         END $$",
        "CREATE TRIGGER chaos_deletion BEFORE DELETE ON images FOR EACH ROW EXECUTE FUNCTION chaos_deletion()",
        // Which job (and phase) a transaction that deleted images saved its
        // progress for.
        "CREATE TABLE chaos_progress (txid bigint, job_id uuid, phase int)",
        "CREATE FUNCTION chaos_progress() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM chaos_deletions WHERE txid = txid_current()) THEN
                 INSERT INTO chaos_progress VALUES (txid_current(), NEW.job_id, (NEW.checkpoint ->> 'phase')::int);
             END IF;
             RETURN NULL;
         END $$",
        "CREATE TRIGGER chaos_progress AFTER UPDATE ON job_results FOR EACH ROW EXECUTE FUNCTION chaos_progress()",
    ];
    for statement in statements {
        sqlx::query(statement).execute(pool).await.unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
}
