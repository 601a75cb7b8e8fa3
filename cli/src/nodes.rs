//! Node addresses and cluster redirects: `--nodes host:port,...`, and the `-NOTLEADER
//! host:port` a follower answers a state change with (docs/cluster.md).

/// A server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub host: String,
    pub port: u16,
}

impl Node {
    pub(crate) fn new(host: impl Into<String>, port: u16) -> Node {
        Node {
            host: host.into(),
            port,
        }
    }

    /// Parses `host:port`, `[v6 address]:port`, or a host alone (then `default_port`).
    pub(crate) fn parse(text: &str, default_port: u16) -> Result<Node, String> {
        let text = text.trim();
        let bad = || format!("'{text}' is not HOST[:PORT]");
        if text.is_empty() {
            return Err(bad());
        }
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
        if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            return match after {
                "" => Ok(Node::new(host, default_port)),
                _ => Ok(Node::new(
                    host,
                    port(after.strip_prefix(':').ok_or_else(bad)?)?,
                )),
            };
        }
        match text.rsplit_once(':') {
            // More than one colon and no brackets: a bare IPv6 address.
            Some((host, _)) if host.contains(':') => Ok(Node::new(text, default_port)),
            Some((host, p)) if !host.is_empty() => Ok(Node::new(host, port(p)?)),
            Some(_) => Err(bad()),
            None => Ok(Node::new(text, default_port)),
        }
    }
}

impl std::fmt::Display for Node {
    /// `host:port`, with brackets around an IPv6 address.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a `NOTLEADER` error reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotLeader {
    /// `NOTLEADER host:port`: the leader is there.
    At(Node),
    /// `NOTLEADER` alone: no leader is known yet (an election); retry shortly.
    Unknown,
}

/// Reads an error reply's text (without the `-`): a NOTLEADER redirect, or None for any
/// other error (or a NOTLEADER whose address does not parse, shown as it is).
pub(crate) fn not_leader(error: &str) -> Option<NotLeader> {
    let rest = error.strip_prefix("NOTLEADER")?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let addr = rest.trim();
    if addr.is_empty() {
        return Some(NotLeader::Unknown);
    }
    // The address has a port: a host alone is not a redirect we can follow.
    if !addr.ends_with(']') && addr.rsplit_once(':').is_some() {
        if let Ok(node) = Node::parse(addr, 0) {
            if node.port != 0 {
                return Some(NotLeader::At(node));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_parse() {
        assert_eq!(
            Node::parse("10.0.0.1:7501", 7379),
            Ok(Node::new("10.0.0.1", 7501))
        );
        assert_eq!(
            Node::parse(" db2 ", 7379),
            Ok(Node::new("db2", 7379)),
            "a host alone gets the default port"
        );
        assert_eq!(Node::parse("[::1]:7502", 7379), Ok(Node::new("::1", 7502)));
        assert_eq!(Node::parse("[::1]", 7379), Ok(Node::new("::1", 7379)));
        assert_eq!(Node::parse("::1", 7379), Ok(Node::new("::1", 7379)));
        for bad in ["", ":7379", "h:0", "h:port", "h:70000", "[::1", "[::1]7"] {
            assert!(Node::parse(bad, 7379).is_err(), "{bad:?}");
        }
        assert_eq!(Node::new("::1", 7).to_string(), "[::1]:7");
        assert_eq!(Node::new("h", 7).to_string(), "h:7");
    }

    #[test]
    fn notleader_replies_are_redirects() {
        assert_eq!(
            not_leader("NOTLEADER 127.0.0.1:7502"),
            Some(NotLeader::At(Node::new("127.0.0.1", 7502)))
        );
        assert_eq!(
            not_leader("NOTLEADER [::1]:7502"),
            Some(NotLeader::At(Node::new("::1", 7502)))
        );
        assert_eq!(not_leader("NOTLEADER"), Some(NotLeader::Unknown));
        assert_eq!(not_leader("NOTLEADER   "), Some(NotLeader::Unknown));
        // Other errors, and addresses that cannot be followed, are not redirects.
        assert_eq!(not_leader("ERR UNCERTAIN leadership was lost"), None);
        assert_eq!(not_leader("NOTLEADERS x:1"), None);
        assert_eq!(not_leader("NOTLEADER somewhere"), None);
        assert_eq!(not_leader("NOTLEADER h:notaport"), None);
    }
}
