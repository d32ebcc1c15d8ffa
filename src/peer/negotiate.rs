//! Which transport a connection runs over: what each side asks for, and the choice both
//! sides compute identically from the two requests and host identities.

use crate::error::{Error, Result, Status};

/// A transport a connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Shm,
    Tcp,
    Rdma,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
        }
    }
    pub(super) fn parse(s: &str) -> Option<Transport> {
        match s {
            "shm" => Some(Transport::Shm),
            "tcp" => Some(Transport::Tcp),
            "rdma" => Some(Transport::Rdma),
            _ => None,
        }
    }
}

/// What `connect_to` asked for: `Auto` picks shared memory on the same host, RDMA when
/// both sides have a usable NIC (never, in this build), TCP otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportRequest {
    Auto,
    Explicit(Transport),
}

impl TransportRequest {
    /// `"auto"`, `"shm"`, `"tcp"` or `"rdma"`; `"rdma"` is refused with `Unsupported`
    /// because this build has no RDMA transport.
    pub fn parse(s: &str) -> Result<TransportRequest> {
        match s {
            "auto" | "" => Ok(TransportRequest::Auto),
            "rdma" => Err(Error::new(
                Status::Unsupported,
                "transport \"rdma\" is not available: this build of dlslime has no RDMA transport; use \"auto\", \"shm\" or \"tcp\"",
            )),
            other => Transport::parse(other)
                .map(TransportRequest::Explicit)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown transport {other:?}: want \"auto\", \"shm\", \"tcp\" or \"rdma\""
                    ))
                }),
        }
    }
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TransportRequest::Auto => "auto",
            TransportRequest::Explicit(t) => t.as_str(),
        }
    }
    /// The `transport_request` a peer sent; anything unknown is `auto`.
    pub(super) fn from_wire(s: &str) -> TransportRequest {
        match Transport::parse(s) {
            Some(t) => TransportRequest::Explicit(t),
            None => TransportRequest::Auto,
        }
    }
    /// The transport an explicit request names.
    pub(super) fn explicit(self) -> Option<Transport> {
        match self {
            TransportRequest::Explicit(t) => Some(t),
            TransportRequest::Auto => None,
        }
    }
    /// Whether a connection over `t` satisfies this request.
    pub(super) fn admits(self, t: Transport) -> bool {
        self.explicit().unwrap_or(t) == t
    }
}

/// The transport both sides settle on, computed identically by each side from the two
/// requests and host identities: an explicit request wins over `auto`; two different
/// explicit requests are an error; `auto` on both sides is shared memory on the same
/// host, TCP otherwise.
pub fn agree_transport(
    mine: TransportRequest,
    theirs: TransportRequest,
    my_host: &str,
    their_host: &str,
) -> Result<Transport> {
    use TransportRequest::*;
    let t = match (mine, theirs) {
        (Explicit(a), Explicit(b)) if a != b => {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "transport mismatch: this side asked for {:?}, the peer for {:?}",
                    a.as_str(),
                    b.as_str()
                ),
            ))
        }
        (Explicit(a), _) | (_, Explicit(a)) => a,
        (Auto, Auto) if my_host == their_host => Transport::Shm,
        (Auto, Auto) => Transport::Tcp,
    };
    if t == Transport::Rdma {
        return Err(Error::new(
            Status::Unsupported,
            "the peer asked for RDMA, which this build of dlslime does not have",
        ));
    }
    if t == Transport::Shm && my_host != their_host {
        return Err(Error::new(
            Status::Unsupported,
            format!("shared memory was requested but the peer is on another host ({their_host:?}, this host {my_host:?})"),
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_agreement() {
        use Transport::*;
        use TransportRequest::*;
        assert_eq!(agree_transport(Auto, Auto, "h", "h").unwrap(), Shm);
        assert_eq!(agree_transport(Auto, Auto, "h", "g").unwrap(), Tcp);
        assert_eq!(agree_transport(Explicit(Tcp), Auto, "h", "h").unwrap(), Tcp);
        assert_eq!(agree_transport(Auto, Explicit(Tcp), "h", "h").unwrap(), Tcp);
        assert_eq!(
            agree_transport(Explicit(Shm), Explicit(Tcp), "h", "h")
                .unwrap_err()
                .status(),
            Status::Unsupported
        );
        assert_eq!(
            agree_transport(Explicit(Shm), Auto, "h", "g")
                .unwrap_err()
                .status(),
            Status::Unsupported
        );
        assert_eq!(
            agree_transport(Auto, Explicit(Rdma), "h", "h")
                .unwrap_err()
                .status(),
            Status::Unsupported
        );
        assert_eq!(
            TransportRequest::parse("rdma").unwrap_err().status(),
            Status::Unsupported
        );
        assert_eq!(
            TransportRequest::parse("carrier-pigeon")
                .unwrap_err()
                .status(),
            Status::InvalidArgument
        );
        assert_eq!(TransportRequest::parse("auto").unwrap(), Auto);
        assert_eq!(TransportRequest::from_wire("tcp"), Explicit(Tcp));
        assert_eq!(TransportRequest::from_wire("auto"), Auto);
    }
}
