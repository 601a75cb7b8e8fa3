//! TODO(turnstile-bin): Turnstile's binary protocol, through the Rust client library.
//!
//! This is the marked place for the binary target. The protocol and the client crate are
//! being designed; when the client exists:
//!
//! 1. add it to `loadgen/Cargo.toml` (`turnstile-client = { path = "../client" }`);
//! 2. here, `pub struct TurnstileBin { addr: String }` implementing [`super::Target`]
//!    (`connect` opens one client session per connection, no pooling, so that
//!    C connections are C sessions as for the other targets) and a `TurnstileBinConn`
//!    implementing [`super::Conn`]: `acquire` maps [`super::Mode`], TTL and WAIT onto the
//!    client's acquire (a grant gives the fencing token, a wait that ran out
//!    [`super::Acquired::TimedOut`]), `release` releases by key;
//! 3. in `target/mod.rs`, drop the `TurnstileBin` line of `unavailable` and call
//!    `f.call(turnstile_bin::TurnstileBin::new(addr))` in `TargetSpec::with_target`.
//!
//! `--target turnstile-bin[=ADDR]` and `compare --turnstile-bin ADDR` already parse, and
//! say that the target is not there yet; the workloads, reports, JSON and plots need no
//! change.

/// What loadgen says when asked for the binary target before it exists.
pub const NOT_YET: &str = "the binary-protocol target waits for the Turnstile client library \
                           (see loadgen/src/target/turnstile_bin.rs)";
