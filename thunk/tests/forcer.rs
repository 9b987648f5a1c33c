//! The forcer against a remote engine that misbehaves on purpose: a hung run is relaunched and the
//! first result wins; retries stop at the build's budget and the rest runs locally.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::Fixture;
use thunk::exec::{Executor, Given, Ran};
use thunk::force::{Forcer, Stragglers};
use thunk::remote::{RemoteEngine, RemoteError, RemoteRun};
use thunk::{Hash, Thunk};

/// What the engine does with its n-th call (from 1).
type Plan = dyn Fn(usize) -> Behaviour + Send + Sync;

enum Behaviour {
    Run,
    Hang,
    Fail,
}

/// A "remote machine" that runs thunks in a sandbox of its own, or hangs, or fails, as planned.
struct Scripted {
    executor: Executor,
    plan: Box<Plan>,
    calls: AtomicUsize,
    metadata_calls: AtomicUsize,
}

#[async_trait::async_trait]
impl RemoteEngine for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn run(
        &self,
        _hash: Hash,
        thunk: &Thunk,
        links: &std::collections::BTreeMap<thunk::SandboxPath, thunk::reduction::OutputFile>,
    ) -> Result<RemoteRun, RemoteError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match (self.plan)(call) {
            Behaviour::Run => {
                let given = Given { links: links.clone(), until: None };
                let Ran::Reduced(reduction, phases) = self.executor.execute_given(thunk, &given).await.unwrap() else {
                    unreachable!("a full run")
                };
                Ok(RemoteRun { reduction, worker: format!("scripted {call}"), phases, overhead_ms: 0 })
            }
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Fail => Err(RemoteError::Retryable(format!("call {call} failed on purpose"))),
        }
    }

    async fn run_until(
        &self,
        _hash: Hash,
        thunk: &Thunk,
        links: &std::collections::BTreeMap<thunk::SandboxPath, thunk::reduction::OutputFile>,
        output: &thunk::SandboxPath,
    ) -> Result<thunk::reduction::OutputFile, RemoteError> {
        self.metadata_calls.fetch_add(1, Ordering::SeqCst);
        let given = Given { links: links.clone(), until: Some(output.clone()) };
        match self.executor.execute_given(thunk, &given).await.unwrap() {
            Ran::Announced(_, file, _) => Ok(file),
            Ran::Reduced(..) => Err(RemoteError::Final("ended before announcing".into())),
        }
    }
}

/// A shell-script thunk that both engines can run: the local engine runs it in place, so its script
/// and outputs live in a directory of their own under the fixture, named by sandbox paths that stand
/// for the real ones.
async fn thunk_in_place(fixture: &Fixture, name: &str, script: &str) -> Thunk {
    let dir = fixture.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!("#!/bin/sh\nset -e\n{script}");
    std::fs::write(dir.join("run.sh"), &text).unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let relative = dir.strip_prefix("/").unwrap().to_str().unwrap().to_owned();
    let mut thunk = fixture.script_thunk(script, &[]).await;
    thunk.inputs.clear();
    thunk.inputs.insert(support::path(&format!("{relative}/run.sh")), fixture.blob(text.as_bytes(), true).await);
    thunk.program = thunk::thunk::ProgramPath(support::path(&format!("{relative}/run.sh")));
    thunk.cwd = Some(support::path(&relative));
    thunk.outputs = [support::path(&format!("{relative}/out.txt"))].into();
    thunk
}

fn output_of(forced: &thunk::force::Forced) -> thunk::reduction::OutputFile {
    *forced.reduction.outputs.values().next().expect("one output")
}

fn scripted(fixture: &Fixture, plan: impl Fn(usize) -> Behaviour + Send + Sync + 'static) -> Arc<Scripted> {
    let executor = Executor::new(fixture.store.clone(), fixture.workdir.clone(), "scripted");
    Arc::new(Scripted {
        executor,
        plan: Box::new(plan),
        calls: AtomicUsize::new(0),
        metadata_calls: AtomicUsize::new(0),
    })
}

#[tokio::test]
async fn a_hung_remote_run_is_launched_again_and_the_first_result_wins() {
    let fixture = Fixture::new();
    let thunk = thunk_in_place(&fixture, "hung", "echo built > out.txt").await;
    let hash = fixture.store.put_thunk(&thunk).await.unwrap();
    let engine = scripted(&fixture, |call| if call == 1 { Behaviour::Hang } else { Behaviour::Run });
    let forcer = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 1)
        .with_remote(engine.clone(), 4)
        .with_stragglers(Stragglers { factor: 1, slack: Duration::from_millis(300), max_copies: 2 });

    let forced = tokio::time::timeout(Duration::from_secs(30), forcer.force(hash)).await.expect("not stuck").unwrap();
    assert!(forced.reduction.succeeded());
    assert_eq!(forced.reduction.engine, "scripted", "the relaunched copy ran it: {forced:?}");
    assert_eq!(forced.fallback, None);
    assert_eq!(forcer.relaunched(), 1);
    assert_eq!(engine.calls.load(Ordering::SeqCst), 2);
    assert_eq!(fixture.store.get_blob(output_of(&forced).hash).await.unwrap(), b"built\n");
}

#[tokio::test]
async fn the_expected_time_of_a_unit_is_learned_from_its_reductions() {
    let fixture = Fixture::new();
    let mut thunk = thunk_in_place(&fixture, "learned", "sleep 0.2; echo a > out.txt").await;
    thunk.args = vec!["--crate-name".into(), "learned".into()];
    let hash = fixture.store.put_thunk(&thunk).await.unwrap();
    let forcer = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 1);
    let forced = forcer.force(hash).await.unwrap();
    forcer.save_history().unwrap();

    let history = thunk::history::History::open(&fixture.workdir.history_path());
    let expected = history.expected_ms(&thunk).expect("learned");
    assert_eq!(expected, forced.reduction.duration_ms);
    assert!(expected >= 200, "{expected}");
    // A new version of the unit (other sources) is expected to take as long.
    let mut edited = thunk.clone();
    edited.env.insert("EDITED".into(), "1".into());
    assert_eq!(history.expected_ms(&edited), Some(expected));
}

#[tokio::test]
async fn retries_stop_at_the_builds_budget_and_the_rest_runs_locally() {
    let fixture = Fixture::new();
    // Every first attempt fails and every retry succeeds: no thunk fails for good, so only the
    // build's budget stops the retrying.
    let engine = scripted(&fixture, |call| if call % 2 == 1 { Behaviour::Fail } else { Behaviour::Run });
    let forcer = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 2).with_remote(engine.clone(), 1);
    let mut fallbacks = Vec::new();
    let mut on_remote = 0;
    for number in 0..40 {
        let thunk = thunk_in_place(&fixture, &format!("t{number}"), &format!("echo {number} > out.txt")).await;
        let hash = fixture.store.put_thunk(&thunk).await.unwrap();
        let forced = forcer.force(hash).await.unwrap();
        assert!(forced.reduction.succeeded());
        let bytes = fixture.store.get_blob(output_of(&forced).hash).await.unwrap();
        assert_eq!(bytes, format!("{number}\n").as_bytes());
        match &forced.fallback {
            Some(reason) => fallbacks.push(reason.clone()),
            None => on_remote += 1,
        }
    }
    // 8 retries, plus one per 3 invocations sent: 24 thunks sent 48 invocations and used 24 retries.
    assert!((20..=30).contains(&on_remote), "{on_remote} ran remotely; fallbacks: {fallbacks:?}");
    assert_eq!(fallbacks.len(), 40 - on_remote);
    assert!(fallbacks.iter().any(|reason| reason.contains("budget")), "{fallbacks:?}");
    let calls = engine.calls.load(Ordering::SeqCst);
    assert!(calls <= 2 * on_remote + 2, "{calls} calls for {on_remote} remote thunks");
}

#[tokio::test]
async fn among_ready_thunks_the_one_on_the_longest_expected_path_runs_first() {
    let fixture = Fixture::new();
    // Every script is instant; only the durations learned for their units tell them apart.
    let history = thunk::history::History::open(&fixture.workdir.history_path());
    let mut made = std::collections::HashMap::new();
    let mut make = async |name: &str, script: &str, producer: Option<&str>, learned_ms: u64| {
        let mut thunk = thunk_in_place(&fixture, name, script).await;
        thunk.args = vec!["--crate-name".into(), name.into()];
        if let Some(producer) = producer {
            let producer: &Thunk = &made[producer];
            let dir = thunk.cwd.clone().unwrap();
            let output = producer.outputs.first().unwrap().clone();
            let input = support::path(&format!("{dir}/input.txt"));
            thunk.inputs.insert(input, thunk::Input::Link { thunk: producer.hash(), output });
        }
        history.record(&thunk, learned_ms);
        fixture.store.put_thunk(&thunk).await.unwrap();
        made.insert(name.to_owned(), thunk.clone());
        thunk.hash()
    };
    let gate = make("gate", "while [ ! -e open ]; do sleep 0.02; done; echo > out.txt", None, 100).await;
    // By source size, the three-thunk chain is the longer; by what the units took before, the
    // two-thunk one is, by far.
    let short1 = make("short1", "echo > out.txt", None, 100).await;
    make("short2", "echo > out.txt", Some("short1"), 100).await;
    let short3 = make("short3", "echo > out.txt", Some("short2"), 100).await;
    let long1 = make("long1", "echo > out.txt", None, 5_000).await;
    let long2 = make("long2", "echo > out.txt", Some("long1"), 5_000).await;
    history.save().unwrap();

    let forcer = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 1);
    forcer.prioritize(&[gate, short3, long2]).await.unwrap();
    // The gate holds the only slot while the rest queue up, the short chain first.
    let mut forcing = vec![tokio::spawn(forcer.force(gate))];
    tokio::time::sleep(Duration::from_millis(300)).await;
    for root in [short3, long2] {
        forcing.push(tokio::spawn(forcer.force(root)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::write(fixture.dir.path().join("gate/open"), b"").unwrap();
    for forced in forcing {
        assert!(forced.await.unwrap().unwrap().reduction.succeeded());
    }
    let order: Vec<Hash> = forcer.runs().iter().map(|run| run.thunk).collect();
    assert_eq!(order.len(), 6);
    assert_eq!(&order[..2], &[gate, long1], "the head of the 10-second chain goes before the 0.3-second one's");
    let position = |hash| order.iter().position(|h| *h == hash).unwrap();
    assert!(position(long1) < position(short1), "{order:?}");
}

#[tokio::test]
async fn a_metadata_run_lets_a_consumer_of_the_rmeta_finish_before_the_library_compile_ends() {
    let fixture = Fixture::new();
    let gate = fixture.dir.path().join("gate-open");
    // A "library": writes its rmeta, announces it as rustc does, then takes until the gate opens to
    // write its rlib.
    let mut library = thunk_in_place(
        &fixture,
        "library",
        &format!(
            "echo metadata > lib.rmeta\n\
             printf '{{\"artifact\":\"%s/lib.rmeta\",\"emit\":\"metadata\"}}\\n' \"$PWD\" >&2\n\
             while [ ! -e {gate} ]; do sleep 0.02; done\n\
             echo code > lib.rlib\n\
             echo done > out.txt",
            gate = gate.display()
        ),
    )
    .await;
    let dir = library.cwd.clone().unwrap();
    library.outputs.extend([support::path(&format!("{dir}/lib.rmeta")), support::path(&format!("{dir}/lib.rlib"))]);
    fixture.store.put_thunk(&library).await.unwrap();
    let mut consumer = thunk_in_place(&fixture, "consumer", "cat in.rmeta > out.txt").await;
    let input = support::path(&format!("{}/in.rmeta", consumer.cwd.clone().unwrap()));
    let rmeta = support::path(&format!("{dir}/lib.rmeta"));
    consumer.inputs.insert(input, thunk::Input::Link { thunk: library.hash(), output: rmeta });
    let consumer_hash = fixture.store.put_thunk(&consumer).await.unwrap();

    let engine = scripted(&fixture, |_| Behaviour::Run);
    let forcer = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 1)
        .with_remote(engine.clone(), 4)
        .with_metadata_runs();
    let library_forced = tokio::spawn(forcer.force(library.hash()));
    // The consumer finishes while the library's compile still waits for the gate.
    let forced = tokio::time::timeout(Duration::from_secs(30), forcer.force(consumer_hash))
        .await
        .expect("the consumer did not wait for the whole library")
        .unwrap();
    assert!(!library_forced.is_finished());
    assert_eq!(fixture.store.get_blob(output_of(&forced).hash).await.unwrap(), b"metadata\n");
    assert_eq!(forcer.metadata_runs(), 1);
    assert_eq!(engine.metadata_calls.load(Ordering::SeqCst), 1);

    std::fs::write(&gate, b"").unwrap();
    let library = library_forced.await.unwrap().unwrap();
    assert!(library.reduction.succeeded());
    assert_eq!(library.reduction.outputs.len(), 3);
}

#[tokio::test]
async fn a_finished_thunks_token_goes_to_the_next_thunk_not_to_a_rustc_waiting_for_one() {
    let fixture = Fixture::new();
    // Stands for a rustc on the implicit token that wants an extra codegen thread: once told to, it
    // waits in read(2) on the jobserver for a token, notes when it got one, keeps it half a second.
    let holder = thunk_in_place(
        &fixture,
        "holder",
        "while [ ! -e go ]; do sleep 0.02; done\n\
         auth=$(printf '%s\\n' \"$CARGO_MAKEFLAGS\" | sed -n 's/.*--jobserver-auth=\\([^ ]*\\).*/\\1/p')\n\
         case $auth in fifo:*) r=${auth#fifo:}; w=$r ;; *) r=/proc/self/fd/${auth%,*}; w=/proc/self/fd/${auth#*,} ;; esac\n\
         token=$(dd bs=1 count=1 if=\"$r\" 2>/dev/null)\n\
         date +%s%N > got_token\n\
         sleep 0.5\n\
         printf %s \"$token\" > \"$w\"\n\
         echo > out.txt",
    )
    .await;
    fixture.store.put_thunk(&holder).await.unwrap();
    let first = thunk_in_place(&fixture, "first", "while [ ! -e release ]; do sleep 0.02; done; echo > out.txt").await;
    fixture.store.put_thunk(&first).await.unwrap();
    let mut next = thunk_in_place(&fixture, "next", "date +%s%N > out.txt").await;
    let input = support::path(&format!("{}/in.txt", next.cwd.clone().unwrap()));
    next.inputs
        .insert(input, thunk::Input::Link { thunk: first.hash(), output: first.outputs.first().unwrap().clone() });
    let next_hash = fixture.store.put_thunk(&next).await.unwrap();

    // Two slots: the implicit token and one in the jobserver's pipe.
    let forcer = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 2);
    let holding = tokio::spawn(forcer.force(holder.hash()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `first` runs on the pipe's token; `next` waits for it.
    let forcing_next = tokio::spawn(forcer.force(next_hash));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = |name: &str| fixture.dir.path().join(name);
    std::fs::write(dir("holder").join("go"), b"").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir("first").join("release"), b"").unwrap();

    let next_forced = forcing_next.await.unwrap().unwrap();
    let held = holding.await.unwrap().unwrap();
    let stderr = fixture.store.get_blob(held.reduction.stderr.hash).await.unwrap();
    assert!(held.reduction.succeeded(), "{}", String::from_utf8_lossy(&stderr));
    let time = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().parse::<u128>().unwrap();
    let next_ran = time(&fixture.store.get_blob(output_of(&next_forced).hash).await.unwrap());
    let rustc_got_token = time(&std::fs::read(dir("holder").join("got_token")).unwrap());
    assert!(
        next_ran < rustc_got_token,
        "`next` ran {} ms after the waiting rustc took the token `first` gave back",
        (next_ran - rustc_got_token) / 1_000_000
    );
}

/// A local store whose writes of one blob wait until the gate opens: a large rlib still being
/// compressed into the store.
#[derive(Debug)]
struct GatedBlob {
    inner: thunk::LocalBackend,
    held: Hash,
    gate: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl thunk::store::Backend for GatedBlob {
    async fn get(&self, key: thunk::ObjectKey) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn put(&self, key: thunk::ObjectKey, bytes: Vec<u8>) -> std::io::Result<()> {
        if key == thunk::ObjectKey::Blob(self.held) {
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open).await.map_err(std::io::Error::other)?;
        }
        self.inner.put(key, bytes).await
    }

    async fn has(&self, key: thunk::ObjectKey) -> std::io::Result<bool> {
        self.inner.has(key).await
    }

    async fn list(&self, kind: &str, from: Option<String>) -> std::io::Result<thunk::store::ListPage> {
        self.inner.list(kind, from).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn with_deferred_storing_a_consumer_runs_before_its_producers_outputs_are_stored() {
    let fixture = Fixture::new();
    let producer = thunk_in_place(&fixture, "producer", "echo library > out.txt").await;
    let produced = producer.outputs.first().unwrap().clone();
    fixture.store.put_thunk(&producer).await.unwrap();
    // In place, a consumer reads its producer's output where the producer wrote it.
    let mut consumer =
        thunk_in_place(&fixture, "consumer", "cat ../producer/out.txt > out.txt; echo linked >> out.txt").await;
    consumer.inputs.insert(produced.clone(), thunk::Input::Link { thunk: producer.hash(), output: produced.clone() });
    let consumer_hash = fixture.store.put_thunk(&consumer).await.unwrap();

    let held = Hash::of(b"library\n");
    let (open, gate) = tokio::sync::watch::channel(false);
    let backend = GatedBlob { inner: thunk::LocalBackend::open(&fixture.store_root()).unwrap(), held, gate };
    let store = thunk::Store::new(Arc::new(backend));
    let forcer = Forcer::new(store, fixture.workdir.clone(), 2).with_deferred_storing();
    let forced = tokio::time::timeout(Duration::from_secs(30), forcer.force(consumer_hash))
        .await
        .expect("the consumer waited for its producer's output to be stored")
        .unwrap();
    assert!(forced.reduction.succeeded());
    let real = |path: &thunk::SandboxPath| std::path::Path::new("/").join(path.as_str());
    assert_eq!(std::fs::read(real(consumer.outputs.first().unwrap())).unwrap(), b"library\nlinked\n");
    // Known only to this forcer until stored.
    assert!(fixture.store.get_reduction(producer.hash()).await.unwrap().is_none());
    assert!(forcer.knows(&real(&produced), held));

    open.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), forcer.settle()).await.expect("storing ended").unwrap();
    let stored = fixture.store.get_reduction(producer.hash()).await.unwrap().expect("the producer's reduction");
    assert_eq!(stored.outputs[&produced].hash, held);
    assert_eq!(fixture.store.get_blob(held).await.unwrap(), b"library\n");
    assert!(fixture.store.get_reduction(consumer_hash).await.unwrap().is_some());
    // A file written since is not taken for what the forcer knew.
    std::fs::write(real(&produced), b"edited\n").unwrap();
    assert!(!forcer.knows(&real(&produced), held));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_goes_on_when_its_forcer_is_dropped_and_an_interrupted_build_can_wait_for_it() {
    let fixture = Fixture::new();
    let thunk = thunk_in_place(&fixture, "finished", "echo finished > out.txt").await;
    let hash = fixture.store.put_thunk(&thunk).await.unwrap();
    let held = Hash::of(b"finished\n");
    let (open, gate) = tokio::sync::watch::channel(false);
    let backend = GatedBlob { inner: thunk::LocalBackend::open(&fixture.store_root()).unwrap(), held, gate };
    let forcer = Forcer::new(thunk::Store::new(Arc::new(backend)), fixture.workdir.clone(), 1).with_deferred_storing();
    let forced = tokio::time::timeout(Duration::from_secs(30), forcer.force(hash)).await.unwrap().unwrap();
    assert!(forced.reduction.succeeded());
    // Ctrl-C drops the build and its forcer while the output is still being stored.
    drop(forcer);
    assert!(!thunk::force::finish_storing(Duration::from_millis(200)).await, "the blob write is held");
    open.send(true).unwrap();
    assert!(thunk::force::finish_storing(Duration::from_secs(30)).await);
    let stored = fixture.store.get_reduction(hash).await.unwrap().expect("the reduction of what finished");
    assert_eq!(fixture.store.get_blob(stored.outputs.values().next().unwrap().hash).await.unwrap(), b"finished\n");
}

#[tokio::test]
async fn a_package_checked_in_place_is_found_in_the_entry_the_model_wrote() {
    let fixture = Fixture::new();
    let mut thunk = thunk_in_place(&fixture, "package", "cat src/nested/deep.rs > out.txt").await;
    let package = fixture.dir.path().join("package");
    let source = package.join("src/nested/deep.rs");
    std::fs::create_dir_all(source.parent().unwrap()).unwrap();
    std::fs::write(&source, "fn deep() {}").unwrap();
    for file in [&source, &package.join("run.sh")] {
        let opened = std::fs::File::options().write(true).open(file).unwrap();
        opened.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)).unwrap();
    }
    let relative = source.strip_prefix("/").unwrap().to_str().unwrap();
    thunk.inputs.insert(support::path(relative), fixture.blob(b"fn deep() {}", false).await);
    let manifest_dir = format!("{}{}", thunk::thunk::SANDBOX_TOKEN, package.display());
    thunk.env.insert("CARGO_MANIFEST_DIR".into(), manifest_dir);
    // What the model does: the package's files hashed into one entry.
    let cache = fixture.workdir.hash_cache();
    cache.group_under(&package);
    for file in [&source, &package.join("run.sh")] {
        cache.digest(file).unwrap();
    }
    drop(cache);
    let entries = fixture.store_root().join("work/hashcache");
    assert_eq!(std::fs::read_dir(&entries).unwrap().count(), 1);

    let hash = fixture.store.put_thunk(&thunk).await.unwrap();
    let forced = Forcer::new(fixture.store.clone(), fixture.workdir.clone(), 1).force(hash).await.unwrap();
    assert!(forced.reduction.succeeded(), "{forced:?}");
    // Looked up by directory instead, both files would be hashed again into an entry per directory.
    assert_eq!(std::fs::read_dir(&entries).unwrap().count(), 1, "only the package's entry");
}
