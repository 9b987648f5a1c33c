//! Writing into a user's target dir so that an interruption leaves nothing a later build trusts wrongly.
//!
//! Real bytes replace a placeholder in place (every hard link cargo made must see them), and rustc run
//! in place writes its outputs itself; neither is atomic. A process killed in the middle (`kill -9`,
//! a closed terminal, an out-of-memory kill) would leave a file that is neither the placeholder nor
//! the real output, and a later build, seeing no placeholder, would take it for built. And a rustc it
//! started would go on running, orphaned, and could write an output after a later build had put a new
//! placeholder there.
//!
//! So before such a write begins, a journal entry names each file and keeps the placeholder it held
//! (its bytes, mode and mtime); the running program's process group is added once it starts. The
//! writer holds an exclusive `flock` on its entry for as long as it lives and removes the entry when
//! the write is complete. Every forcer first [recovers](Journal::recover) the entries no living
//! process holds: it kills the process group if it is still running, puts each placeholder back
//! (or removes a file that held something else, so cargo rebuilds it), and deletes the entry. A
//! writer that fails while alive does the same for its own entry when it is dropped.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::placeholder::Placeholder;

/// The journal of one workdir (`work/writing/`).
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// What an entry records.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    files: Vec<Saved>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process_group: Option<ProcessGroup>,
}

/// A file about to be written, and the placeholder it held, if it held one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    placeholder: Option<SavedPlaceholder>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPlaceholder {
    text: String,
    executable: bool,
    /// Nanoseconds since the epoch: cargo's fingerprints compare the mtime.
    mtime_ns: u128,
}

/// A process group a writer started, named with its leader's start time so that a recycled process
/// id is never taken for it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessGroup {
    pid: i32,
    start_time: u64,
}

/// What [`Journal::recover`] undid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Entries of interrupted writers.
    pub entries: usize,
    /// Files that hold their placeholder again.
    pub restored: usize,
    /// Files removed (they held no placeholder before the write).
    pub removed: usize,
    /// Process groups still running that were killed.
    pub killed: usize,
}

impl Journal {
    /// The journal kept in `dir`.
    pub fn new(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    /// Records that `paths` are about to be written; the returned guard must be
    /// [committed](Pending::commit) once they hold complete bytes, or dropping it puts them back.
    pub fn begin(&self, paths: impl IntoIterator<Item = PathBuf>) -> io::Result<Pending> {
        let entry = Entry { files: paths.into_iter().map(|path| save(&path)).collect(), process_group: None };
        fs::create_dir_all(&self.dir)?;
        // Locked before it gets the name recovery looks for, so recovery never sees it unlocked.
        let temp = tempfile::Builder::new().prefix(".new-").tempfile_in(&self.dir)?;
        lock(temp.as_file(), true)?;
        let mut pending = Pending { path: PathBuf::new(), file: temp.as_file().try_clone()?, entry, done: false };
        pending.write()?;
        let name = format!("{}.entry", temp.path().file_name().and_then(|n| n.to_str()).unwrap_or_default());
        pending.path = self.dir.join(name.trim_start_matches(".new-"));
        temp.persist(&pending.path).map_err(|e| e.error)?;
        Ok(pending)
    }

    /// Undoes the writes of every writer that died before completing them (see the module's docs).
    pub fn recover(&self) -> io::Result<Recovered> {
        let mut recovered = Recovered::default();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(recovered),
            Err(error) => return Err(error),
        };
        for dirent in entries {
            let path = dirent?.path();
            if path.extension().is_none_or(|extension| extension != "entry") {
                continue;
            }
            let Ok(mut file) = fs::OpenOptions::new().read(true).write(true).open(&path) else { continue };
            // Held by a living writer: not ours to undo.
            if lock(&file, false).is_err() {
                continue;
            }
            // Completed (and unlinked) between the listing and the lock.
            if std::os::unix::fs::MetadataExt::nlink(&file.metadata()?) == 0 {
                continue;
            }
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            // An entry this version cannot read names nothing it could undo safely: keep it, so a
            // human can, rather than delete it.
            let Ok(entry) = serde_json::from_str::<Entry>(&text) else { continue };
            let undone = undo(&entry)?;
            recovered.entries += 1;
            recovered.restored += undone.restored;
            recovered.removed += undone.removed;
            recovered.killed += undone.killed;
            fs::remove_file(&path)?;
        }
        Ok(recovered)
    }
}

/// An entry being written under; see [`Journal::begin`].
#[derive(Debug)]
pub struct Pending {
    path: PathBuf,
    file: fs::File,
    entry: Entry,
    done: bool,
}

impl Pending {
    /// Records the process group of the program writing the files, so that recovery can stop it.
    pub fn note_process_group(&mut self, pid: i32) -> io::Result<()> {
        let Some(start_time) = start_time(pid) else { return Ok(()) };
        self.entry.process_group = Some(ProcessGroup { pid, start_time });
        self.write()
    }

    /// The files hold complete bytes: the entry is removed.
    pub fn commit(mut self) -> io::Result<()> {
        self.done = true;
        fs::remove_file(&self.path)
    }

    fn write(&mut self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.entry).map_err(io::Error::other)?;
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(&bytes)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The write failed or was abandoned while this process lives: undo it now. If undoing fails,
        // the entry stays, and the next forcer's recovery tries again.
        if undo(&self.entry).is_ok() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn save(path: &Path) -> Saved {
    let placeholder = (|| {
        let metadata = fs::symlink_metadata(path).ok().filter(fs::Metadata::is_file)?;
        Placeholder::read(path).ok()??;
        let text = fs::read_to_string(path).ok()?;
        let mtime_ns = metadata.modified().ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_nanos();
        Some(SavedPlaceholder { text, executable: metadata.permissions().mode() & 0o100 != 0, mtime_ns })
    })();
    Saved { path: path.to_owned(), placeholder }
}

struct Undone {
    restored: usize,
    removed: usize,
    killed: usize,
}

fn undo(entry: &Entry) -> io::Result<Undone> {
    let mut undone = Undone { restored: 0, removed: 0, killed: 0 };
    if let Some(group) = entry.process_group
        && is_still_running(group)
    {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the one the writer started.
        unsafe { libc::kill(-group.pid, libc::SIGKILL) };
        undone.killed += 1;
        // Its members may still be writing until the signal lands.
        for _ in 0..200 {
            // SAFETY: as above; signal 0 only asks whether the group exists.
            if unsafe { libc::kill(-group.pid, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for saved in &entry.files {
        match &saved.placeholder {
            Some(placeholder) => {
                crate::realize::realize(&saved.path, placeholder.text.as_bytes(), placeholder.executable)?;
                let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(placeholder.mtime_ns as u64);
                fs::File::options().write(true).open(&saved.path)?.set_modified(mtime)?;
                undone.restored += 1;
            }
            None => match fs::remove_file(&saved.path) {
                Ok(()) => undone.removed += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            },
        }
    }
    Ok(undone)
}

/// Whether the process group the writer started still has members: its leader, if that process has
/// the recorded start time, or members without their leader (a linker rustc started). Linux gives no
/// new process an id that names a process group still in use, so a group without its leader is ours.
fn is_still_running(group: ProcessGroup) -> bool {
    match start_time(group.pid) {
        Some(start_time) => start_time == group.start_time,
        // SAFETY: signal 0 only asks whether the group exists.
        None => (unsafe { libc::kill(-group.pid, 0) }) == 0,
    }
}

/// `flock(2)`, exclusive; without `wait`, fails at once when another holds it.
fn lock(file: &fs::File, wait: bool) -> io::Result<()> {
    let operation = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    loop {
        // SAFETY: flock on a descriptor the caller owns.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::path::SandboxPath;

    fn placeholder_at(path: &Path) -> SystemTime {
        let placeholder = Placeholder { thunk: Hash::of(b"t"), output: SandboxPath::new("deps/app").unwrap() };
        placeholder.write(path, true).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
        old
    }

    #[test]
    fn a_dead_writers_half_written_file_becomes_its_placeholder_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("writing"));
        let app = dir.path().join("app");
        let mtime = placeholder_at(&app);
        let uplifted = dir.path().join("app-uplifted");
        fs::hard_link(&app, &uplifted).unwrap();
        let stale = dir.path().join("libstale.rlib");
        fs::write(&stale, b"an older build's rlib").unwrap();

        let pending = journal.begin([app.clone(), stale.clone()]).unwrap();
        fs::write(&app, b"\x7fELF half of it").unwrap();
        fs::write(&stale, b"half of a new rlib").unwrap();
        // While its writer lives, an entry is left alone.
        assert_eq!(journal.recover().unwrap(), Recovered::default());
        // The writer dies.
        assert!(as_if_killed(pending).exists());

        let recovered = journal.recover().unwrap();
        assert_eq!(recovered, Recovered { entries: 1, restored: 1, removed: 1, killed: 0 });
        assert!(Placeholder::read(&app).unwrap().is_some());
        assert!(Placeholder::read(&uplifted).unwrap().is_some(), "in place: the hard link sees it too");
        assert_eq!(fs::metadata(&app).unwrap().modified().unwrap(), mtime);
        assert_eq!(fs::metadata(&app).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(!stale.exists(), "a file that held no placeholder is removed, so cargo rebuilds it");
        assert_eq!(journal.recover().unwrap(), Recovered::default(), "done once");
    }

    /// Drops the guard without undoing anything, as a killed process would: its descriptor closes (the
    /// lock goes with it) and its entry stays. Returns the entry's path.
    fn as_if_killed(mut pending: Pending) -> PathBuf {
        pending.done = true;
        pending.path.clone()
    }

    #[test]
    fn a_failed_write_is_undone_by_its_living_writer_and_a_complete_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("writing"));
        let app = dir.path().join("app");
        placeholder_at(&app);
        let pending = journal.begin([app.clone()]).unwrap();
        fs::write(&app, b"partial").unwrap();
        drop(pending);
        assert!(Placeholder::read(&app).unwrap().is_some());

        let pending = journal.begin([app.clone()]).unwrap();
        fs::write(&app, b"\x7fELF complete").unwrap();
        pending.commit().unwrap();
        assert_eq!(fs::read(&app).unwrap(), b"\x7fELF complete");
        assert_eq!(fs::read_dir(dir.path().join("writing")).unwrap().count(), 0);
    }

    #[test]
    fn recovery_kills_the_process_group_a_dead_writer_started() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("writing"));
        let out = dir.path().join("out");
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh").args(["-c", "sleep 60"]).process_group(0).spawn().unwrap();
        let mut pending = journal.begin([out.clone()]).unwrap();
        pending.note_process_group(child.id() as i32).unwrap();
        as_if_killed(pending);

        let recovered = journal.recover().unwrap();
        assert_eq!(recovered.killed, 1);
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    }
}
