//! The save/restore seam every stateful device implements (Firecracker's `Persist` pattern).
//!
//! A device's [`Persist::State`] is plain serializable data: what the guest can observe and the
//! host configuration needed to rebuild the device (a backing path, a rate limiter's buckets),
//! never a file descriptor or a pointer. [`Persist::restore`] rebuilds a live device from that
//! state plus [`Persist::ConstructorArgs`], the host resources a restore must supply afresh
//! (guest memory, an interrupt line, an event loop's eventfds).
//!
//! Every implementation has a save → restore → save round-trip test next to it. The snapshot
//! container (header, versioning, checksum) lives in the VMM; this module only defines the seam.

/// Saving and rebuilding a component's state.
pub trait Persist: Sized {
    /// The serializable state.
    type State: serde::Serialize + serde::de::DeserializeOwned;
    /// What a restore needs besides the state.
    type ConstructorArgs;
    /// Why a restore can fail (the state is untrusted input: never panic on it).
    type Error: std::error::Error;

    /// Captures the current state.
    fn save(&self) -> Self::State;

    /// Rebuilds a component from `state`.
    fn restore(args: Self::ConstructorArgs, state: &Self::State) -> Result<Self, Self::Error>;
}
