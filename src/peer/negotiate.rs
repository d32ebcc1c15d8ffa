//! Which transport (and how many RDMA data QPs) a connection runs over: what each side
//! asks for, and the choice both sides compute identically from the two sides' requests,
//! host identities and NICs.

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

/// What `connect_to` asked for: `Auto` picks shared memory on the same host, RDMA
/// between hosts when both sides have an active NIC, TCP otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportRequest {
    Auto,
    Explicit(Transport),
}

impl TransportRequest {
    /// `"auto"` (or empty), `"shm"`, `"tcp"` or `"rdma"`.
    pub fn parse(s: &str) -> Result<TransportRequest> {
        match s {
            "auto" | "" => Ok(TransportRequest::Auto),
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

/// One side of a connection as the negotiation sees it.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    pub request: TransportRequest,
    /// Host identity (see [`host_id`](super::host_id)).
    pub host: &'a str,
    /// Whether the side has an active RDMA NIC port it can open.
    pub rdma: bool,
    /// Data QPs asked for (RDMA); 0 when the side expressed no wish.
    pub qp_num: usize,
}

/// What both sides settle on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    pub transport: Transport,
    /// RDMA data QPs: the larger of the two sides' `qp_num` (at least 1).
    pub qp_num: usize,
}

/// The transport both sides settle on, computed identically by each side: an explicit
/// request wins over `auto`; two different explicit requests are an error; `auto` on
/// both sides is shared memory on the same host, RDMA between hosts when both have an
/// active NIC, TCP otherwise. RDMA needs a NIC on both sides, shared memory one host.
pub fn agree(me: &Side<'_>, peer: &Side<'_>) -> Result<Agreement> {
    use TransportRequest::*;
    let same_host = me.host == peer.host;
    let t = match (me.request, peer.request) {
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
        (Auto, Auto) if same_host => Transport::Shm,
        (Auto, Auto) if me.rdma && peer.rdma => Transport::Rdma,
        (Auto, Auto) => Transport::Tcp,
    };
    if t == Transport::Rdma && !(me.rdma && peer.rdma) {
        let who = match (me.rdma, peer.rdma) {
            (false, false) => "neither side has",
            (false, true) => "this side has no",
            _ => "the peer has no",
        };
        return Err(Error::new(
            Status::RdmaUnavailable,
            format!("RDMA was requested but {who} active RDMA NIC port"),
        ));
    }
    if t == Transport::Shm && !same_host {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "shared memory was requested but the peer is on another host ({:?}, this host {:?})",
                peer.host, me.host
            ),
        ));
    }
    Ok(Agreement {
        transport: t,
        qp_num: me.qp_num.max(peer.qp_num).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(request: TransportRequest, host: &str, rdma: bool) -> Side<'_> {
        Side {
            request,
            host,
            rdma,
            qp_num: 0,
        }
    }

    fn t(a: Side<'_>, b: Side<'_>) -> Result<Transport> {
        agree(&a, &b).map(|g| g.transport)
    }

    #[test]
    fn transport_agreement() {
        use Transport::*;
        use TransportRequest::*;
        // (this side, the peer) -> the transport both pick
        let agreed = [
            (side(Auto, "h", false), side(Auto, "h", false), Shm),
            (side(Auto, "h", true), side(Auto, "h", true), Shm),
            (side(Auto, "h", false), side(Auto, "g", false), Tcp),
            (side(Auto, "h", true), side(Auto, "g", false), Tcp),
            (side(Auto, "h", true), side(Auto, "g", true), Rdma),
            (side(Explicit(Tcp), "h", true), side(Auto, "g", true), Tcp),
            (side(Auto, "h", false), side(Explicit(Tcp), "h", false), Tcp),
            (side(Explicit(Rdma), "h", true), side(Auto, "h", true), Rdma),
        ];
        for (a, b, want) in agreed {
            assert_eq!(t(a, b).unwrap(), want, "{a:?} / {b:?}");
        }
        // (this side, the peer) -> the refusal
        let refused = [
            (
                side(Explicit(Shm), "h", false),
                side(Explicit(Tcp), "h", false),
                Status::Unsupported,
            ),
            (
                side(Explicit(Shm), "h", false),
                side(Auto, "g", false),
                Status::Unsupported,
            ),
            (
                side(Auto, "h", true),
                side(Explicit(Rdma), "g", false),
                Status::RdmaUnavailable,
            ),
        ];
        for (a, b, want) in refused {
            assert_eq!(t(a, b).unwrap_err().status(), want, "{a:?} / {b:?}");
        }
        let g = agree(
            &Side {
                qp_num: 4,
                ..side(Explicit(Rdma), "h", true)
            },
            &Side {
                qp_num: 2,
                ..side(Auto, "g", true)
            },
        )
        .unwrap();
        assert_eq!(g.qp_num, 4);
        assert_eq!(
            agree(&side(Auto, "h", true), &side(Auto, "g", true))
                .unwrap()
                .qp_num,
            1
        );
        assert_eq!(
            TransportRequest::parse("carrier-pigeon")
                .unwrap_err()
                .status(),
            Status::InvalidArgument
        );
        assert_eq!(TransportRequest::parse("rdma").unwrap(), Explicit(Rdma));
        assert_eq!(TransportRequest::parse("auto").unwrap(), Auto);
        assert_eq!(TransportRequest::from_wire("tcp"), Explicit(Tcp));
        assert_eq!(TransportRequest::from_wire("auto"), Auto);
    }
}
