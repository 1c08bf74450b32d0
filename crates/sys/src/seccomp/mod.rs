//! seccomp-BPF, Firecracker's model: one filter per thread category, installed by each thread on
//! itself.
//!
//! - Categories ([`ThreadCategory`]): `vmm` (the VMM thread, once the microVM is built, and its
//!   `fc_stdin` helper), `api` (`fc_api`, right after it bound its socket), `vcpu` (each
//!   `fc_vcpu N`, after its vCPU is configured and before the first `KVM_RUN`).
//! - Programs are raw classic-BPF, one `u64` per instruction ([`BpfProgram`], Firecracker's
//!   representation), so squib's own filters ([`policy::default_filters`], built with the
//!   rust-vmm `seccompiler` from squib's allow-lists) and a `--seccomp-filter` file (Firecracker's
//!   format: `bitcode` of a map category → program, [`load_filter_file`]) are the same thing.
//! - Installation is per thread (`seccomp(SECCOMP_SET_MODE_FILTER, 0, ..)`, no TSYNC), as in
//!   Firecracker: the categories need different lists, and TSYNC would force one list (the
//!   union) on every thread. A thread created after its creator installed a filter inherits it.
//! - The process policy is set once at startup ([`set_process_filters`]); each thread role calls
//!   [`install_for_current_thread`] at its installation point. Without a policy (embedders, unit
//!   tests) or with `--no-seccomp` (empty programs) nothing is installed.
//! - A denied system call raises `SIGSYS` (the filters' default action is `SECCOMP_RET_TRAP`, as
//!   Firecracker's); the process's one `SIGSYS` handler ([`crate::signals`]) logs Firecracker's
//!   lines through [`sigsys`], counts `seccomp.num_faults`, writes a last metrics line and exits
//!   with 148 (`BadSyscall`).

pub mod policy;
pub mod sigsys;

use std::{
    collections::{BTreeMap, HashMap},
    io::Read,
    path::Path,
    sync::{Arc, OnceLock},
};

/// One classic-BPF instruction (`struct sock_filter`: code u16, jt u8, jf u8, k u32), packed
/// little-endian into a `u64` as Firecracker stores it.
pub type BpfInstruction = u64;

/// A BPF program.
pub type BpfProgram = Vec<BpfInstruction>;

/// The kernel's limit on a seccomp-BPF program.
pub const BPF_MAX_LEN: usize = 4096;

/// Largest `--seccomp-filter` file accepted (Firecracker's `DESERIALIZATION_BYTES_LIMIT`).
pub const DESERIALIZATION_BYTES_LIMIT: usize = 100_000;

/// Firecracker's exit code after a denied system call (`FcExitCode::BadSyscall`).
pub const BAD_SYSCALL_EXIT_CODE: i32 = 148;

/// The thread categories of a filter map (Firecracker's keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadCategory {
    /// The VMM thread (event loop, devices) after the microVM is built, and `fc_stdin`.
    Vmm,
    /// The API thread `fc_api`.
    Api,
    /// Every vCPU thread `fc_vcpu N`.
    Vcpu,
}

impl ThreadCategory {
    /// Every category, in Firecracker's order.
    pub const ALL: [Self; 3] = [Self::Vmm, Self::Api, Self::Vcpu];

    /// The key in a filter map.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vmm => "vmm",
            Self::Api => "api",
            Self::Vcpu => "vcpu",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// `--seccomp-filter` file errors (Firecracker's `DeserializationError` texts).
#[derive(Debug, thiserror::Error)]
pub enum DeserializationError {
    /// The file could not be read.
    #[error("Failed to read input: {0}")]
    InputRead(std::io::Error),
    /// The file is over [`DESERIALIZATION_BYTES_LIMIT`].
    #[error("Input size {0} exceeds limit of {1} bytes")]
    SizeLimitExceeded(usize, usize),
    /// Not a bitcode map of programs.
    #[error("Bitcode deserialization failed: {0}")]
    Bitcode(bitcode::Error),
}

/// Errors getting the filters (Firecracker's `FilterError` texts).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Bad `--seccomp-filter` contents.
    #[error("Filter deserialization failed: {0}")]
    Deserialization(DeserializationError),
    /// Keys other than `vmm`, `api`, `vcpu` (comma-separated).
    #[error("Invalid thread categories: {0}")]
    ThreadCategories(String),
    /// A category is missing.
    #[error("Missing thread category: {0}")]
    MissingThreadCategory(String),
    /// `--seccomp-filter` cannot be opened.
    #[error("Filter file open error: {0}")]
    FileOpen(std::io::Error),
    /// squib's own allow-lists could not be compiled (a bug).
    #[error("Cannot build the default filters: {0}")]
    Policy(String),
}

/// Errors installing a filter (Firecracker's `InstallationError` texts).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Over [`BPF_MAX_LEN`] instructions.
    #[error("Filter length exceeds the maximum size of {BPF_MAX_LEN} instructions")]
    FilterTooLarge,
    /// `prctl(PR_SET_NO_NEW_PRIVS)` or `seccomp(2)` failed (e.g. an invalid program).
    #[error("prctl` syscall failed with error code: {0}")]
    Prctl(std::io::Error),
}

/// The filters of the process: one program per category; an empty program installs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeccompFilters {
    vmm: Arc<BpfProgram>,
    api: Arc<BpfProgram>,
    vcpu: Arc<BpfProgram>,
}

impl SeccompFilters {
    /// No filtering (`--no-seccomp`).
    pub fn none() -> Self {
        Self::default()
    }

    /// From a map keyed by category name; Firecracker's checks (lower-cased keys, no unknown
    /// key, every category present).
    pub fn from_map(map: HashMap<String, BpfProgram>) -> Result<Self, FilterError> {
        let mut known: HashMap<ThreadCategory, BpfProgram> = HashMap::new();
        let mut unknown: Vec<String> = Vec::new();
        for (key, program) in map {
            let key = key.to_lowercase();
            match ThreadCategory::from_name(&key) {
                Some(c) => {
                    known.insert(c, program);
                }
                None => unknown.push(key),
            }
        }
        if !unknown.is_empty() {
            return Err(FilterError::ThreadCategories(unknown.join(",")));
        }
        let mut take = |c: ThreadCategory| {
            known
                .remove(&c)
                .map(Arc::new)
                .ok_or_else(|| FilterError::MissingThreadCategory(c.name().to_owned()))
        };
        Ok(Self {
            vmm: take(ThreadCategory::Vmm)?,
            api: take(ThreadCategory::Api)?,
            vcpu: take(ThreadCategory::Vcpu)?,
        })
    }

    /// The program of `category` (empty: no filter).
    pub fn get(&self, category: ThreadCategory) -> &BpfProgram {
        match category {
            ThreadCategory::Vmm => &self.vmm,
            ThreadCategory::Api => &self.api,
            ThreadCategory::Vcpu => &self.vcpu,
        }
    }

    /// Whether no category has a filter.
    pub fn is_empty(&self) -> bool {
        ThreadCategory::ALL.iter().all(|&c| self.get(c).is_empty())
    }

    /// Firecracker's binary format of these filters (what `seccompiler-bin` writes and
    /// `--seccomp-filter` reads): `bitcode` of a map category name → program.
    pub fn to_binary(&self) -> Vec<u8> {
        let map: BTreeMap<String, BpfProgram> = ThreadCategory::ALL
            .iter()
            .map(|&c| (c.name().to_owned(), self.get(c).clone()))
            .collect();
        bitcode::serialize(&map).unwrap_or_default()
    }
}

/// Decode Firecracker's binary filter format (size-limited before decoding).
pub fn deserialize_binary<R: Read>(
    reader: R,
) -> Result<HashMap<String, BpfProgram>, DeserializationError> {
    let mut buf = Vec::new();
    let read = reader
        .take(DESERIALIZATION_BYTES_LIMIT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(DeserializationError::InputRead)?;
    if read > DESERIALIZATION_BYTES_LIMIT {
        return Err(DeserializationError::SizeLimitExceeded(
            read,
            DESERIALIZATION_BYTES_LIMIT,
        ));
    }
    bitcode::deserialize(&buf).map_err(DeserializationError::Bitcode)
}

/// `--seccomp-filter FILE`: open, decode, check the categories.
pub fn load_filter_file(path: &Path) -> Result<SeccompFilters, FilterError> {
    let file = std::fs::File::open(path).map_err(FilterError::FileOpen)?;
    let map =
        deserialize_binary(std::io::BufReader::new(file)).map_err(FilterError::Deserialization)?;
    SeccompFilters::from_map(map)
}

/// Install `program` on the calling thread (`PR_SET_NO_NEW_PRIVS`, then
/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, ..)`). An empty program installs nothing.
pub fn apply_filter(program: &[BpfInstruction]) -> Result<(), InstallError> {
    if program.is_empty() {
        return Ok(());
    }
    if program.len() > BPF_MAX_LEN {
        return Err(InstallError::FilterTooLarge);
    }
    let len = u16::try_from(program.len()).map_err(|_| InstallError::FilterTooLarge)?;
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS and constant arguments touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(InstallError::Prctl(std::io::Error::last_os_error()));
    }
    // `struct sock_fprog`. A `u64` has the size of `struct sock_filter` and a stricter
    // alignment, and the packing of `BpfInstruction` is the struct's little-endian layout.
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel copies
    // the program (copy_from_user) and keeps no reference to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const prog,
        )
    };
    if rc != 0 {
        return Err(InstallError::Prctl(std::io::Error::last_os_error()));
    }
    Ok(())
}

static PROCESS_FILTERS: OnceLock<SeccompFilters> = OnceLock::new();

/// Set the process's filters (once, at startup, before any thread installs). Returns `false`
/// if they were already set.
pub fn set_process_filters(filters: SeccompFilters) -> bool {
    PROCESS_FILTERS.set(filters).is_ok()
}

/// The process's filters, if set.
pub fn process_filters() -> Option<&'static SeccompFilters> {
    PROCESS_FILTERS.get()
}

/// Install the process's filter for `category` on the calling thread (nothing if no policy was
/// set or the category's program is empty). Also records the thread's name for the `SIGSYS`
/// log line, and seeds the thread's hash keys: std draws them with `getrandom` on a thread's
/// first `HashMap`/`RandomState` (serde_json's maps included), which no filter allows, and the
/// `SIGSYS` handler's last metrics line builds such maps on whichever thread trapped.
pub fn install_for_current_thread(category: ThreadCategory) -> Result<(), InstallError> {
    sigsys::remember_thread_name();
    let _ = std::hash::RandomState::new();
    let Some(filters) = process_filters() else {
        return Ok(());
    };
    apply_filter(filters.get(category))?;
    test_hook::after_install(category);
    Ok(())
}

/// Debug builds only: `SQUIB_TEST_BAD_SYSCALL=<vmm|api|vcpu>` makes a thread of that category
/// issue a system call no filter allows (`getppid`) right after installing its filter, so the
/// end-to-end tests can prove a violation is fatal on every thread role. Release builds have no
/// hook; with `--no-seccomp` the call is harmless.
mod test_hook {
    use super::ThreadCategory;

    /// The environment variable of the hook.
    #[cfg(debug_assertions)]
    const VAR: &str = "SQUIB_TEST_BAD_SYSCALL";

    #[cfg(debug_assertions)]
    pub(super) fn after_install(category: ThreadCategory) {
        if std::env::var(VAR).is_ok_and(|v| v == category.name()) {
            // SAFETY: getppid takes no argument and cannot fail; it only reads process state.
            let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
            tracing::warn!(
                "{VAR}: the {} thread survived getppid ({ppid})",
                category.name()
            );
        }
    }

    #[cfg(not(debug_assertions))]
    pub(super) fn after_install(_category: ThreadCategory) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_should_round_trip_firecracker_binary_format_and_lowercase_keys() {
        let mut map: BTreeMap<String, BpfProgram> = BTreeMap::new();
        map.insert("VmM".into(), vec![1, 2]);
        map.insert("api".into(), vec![3]);
        map.insert("vcpu".into(), vec![]);
        let bytes = bitcode::serialize(&map).unwrap();
        let decoded = deserialize_binary(&bytes[..]).unwrap();
        let filters = SeccompFilters::from_map(decoded).unwrap();
        assert_eq!(filters.get(ThreadCategory::Vmm), &vec![1, 2]);
        assert_eq!(filters.get(ThreadCategory::Api), &vec![3]);
        assert!(filters.get(ThreadCategory::Vcpu).is_empty());
        let again = deserialize_binary(&filters.to_binary()[..]).unwrap();
        assert_eq!(SeccompFilters::from_map(again).unwrap(), filters);
    }

    #[test]
    fn test_should_refuse_bad_files_with_firecracker_texts() {
        let e = deserialize_binary(&b"adassafvc"[..]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Bitcode deserialization failed: "),
            "{e}"
        );
        let big = vec![0u8; DESERIALIZATION_BYTES_LIMIT + 10];
        let e = deserialize_binary(&big[..]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Input size 100001 exceeds limit of 100000 bytes"
        );

        let mut map = HashMap::new();
        map.insert("vmm".to_owned(), vec![]);
        map.insert("api".to_owned(), vec![]);
        map.insert("thread1".to_owned(), vec![]);
        let e = SeccompFilters::from_map(map.clone()).unwrap_err();
        assert_eq!(e.to_string(), "Invalid thread categories: thread1");
        map.remove("thread1");
        let e = SeccompFilters::from_map(map).unwrap_err();
        assert_eq!(e.to_string(), "Missing thread category: vcpu");

        let e = load_filter_file(Path::new("/nonexistent/squib.bpf")).unwrap_err();
        assert!(e.to_string().starts_with("Filter file open error: "), "{e}");
    }

    #[test]
    fn test_should_refuse_oversized_and_invalid_programs_without_installing() {
        std::thread::spawn(|| {
            assert!(matches!(
                apply_filter(&vec![0; BPF_MAX_LEN + 1]),
                Err(InstallError::FilterTooLarge)
            ));
            apply_filter(&[]).unwrap();
            assert!(matches!(apply_filter(&[0xFF]), Err(InstallError::Prctl(_))));
            // SAFETY: PR_GET_SECCOMP only reads the calling thread's mode.
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_SECCOMP) }, 0);
        })
        .join()
        .unwrap();
    }
}
