//! CLUSTER: membership of a Turnstile cluster (cluster mode; docs/cluster.md).
//!
//! # Format
//! ```text
//! CLUSTER STATUS                        -> bulk string: INFO's replication section
//! CLUSTER INIT id=raft/client ...       -> +OK (a pristine node only: starts a new cluster
//!                                          with these voters)
//! CLUSTER ADD-LEARNER id raft client    -> :<log index> once the learner caught up
//! CLUSTER PROMOTE id                    -> :<log index> (voters += id)
//! CLUSTER REMOVE id                     -> :<log index> (voters -= id, or the learner goes)
//! ```
//! The changing ones are served by the leader (`-NOTLEADER` elsewhere, INIT excepted).

use super::{parse_u64, wrong_args, Ctx, Flow, Op};

/// A membership command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// CLUSTER INIT.
    Init(std::collections::BTreeMap<u64, (String, String)>),
    /// CLUSTER ADD-LEARNER.
    AddLearner {
        /// Its id.
        id: u64,
        /// Its raft address.
        raft: String,
        /// Its client address.
        client: String,
    },
    /// CLUSTER PROMOTE.
    Promote(u64),
    /// CLUSTER REMOVE.
    Remove(u64),
}

pub(super) fn run(ctx: &mut Ctx, args: &[&[u8]]) -> Flow {
    let Some((sub, rest)) = args.split_first() else {
        wrong_args(ctx, "cluster");
        return Flow::Continue;
    };
    let Some(cluster) = ctx.shared.cluster.as_ref() else {
        ctx.out
            .error("ERR this server runs standalone (start it with --node-id to form a cluster)");
        return Flow::Continue;
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let id = |b: &[u8]| parse_u64(b).filter(|&i| i > 0);
    let admin = match (sub.to_ascii_uppercase().as_slice(), rest) {
        (b"STATUS", []) => {
            let mut s = String::new();
            super::info::replication(&mut s, cluster);
            ctx.out.bulk(s.as_bytes());
            return Flow::Continue;
        }
        (b"INIT", members) if !members.is_empty() => {
            let joined = members
                .iter()
                .map(|m| text(m))
                .collect::<Vec<_>>()
                .join(",");
            match crate::config::parse_members(&joined) {
                Ok(m) => Admin::Init(m.0),
                Err(e) => {
                    ctx.out.error(&format!("ERR {e}"));
                    return Flow::Continue;
                }
            }
        }
        (b"ADD-LEARNER", [n, raft, client]) => match id(n) {
            Some(id) => Admin::AddLearner {
                id,
                raft: text(raft),
                client: text(client),
            },
            None => {
                super::not_an_integer(ctx, "node id");
                return Flow::Continue;
            }
        },
        (b"PROMOTE", [n]) | (b"REMOVE", [n]) => match id(n) {
            Some(i) if sub.eq_ignore_ascii_case(b"PROMOTE") => Admin::Promote(i),
            Some(i) => Admin::Remove(i),
            None => {
                super::not_an_integer(ctx, "node id");
                return Flow::Continue;
            }
        },
        _ => {
            ctx.out.error(
                "ERR unknown CLUSTER subcommand or wrong arguments; try STATUS, INIT, ADD-LEARNER, PROMOTE, REMOVE",
            );
            return Flow::Continue;
        }
    };
    Flow::Replicate(Op::Cluster(admin))
}
