//! An agent connection's socket, which the server can cut from outside: the socket is wrapped
//! in `postern_protocol::sever::Severable` (which says why a cut is needed), and `Cut` is
//! its handle, shared by the connection's handler, its control task and the link registry.

use postern_protocol::sever::Severable;
use tokio_util::sync::CancellationToken;

/// Cuts one connection; clones cut the same one.
#[derive(Clone, Debug, Default)]
pub struct Cut(CancellationToken);

impl Cut {
    pub fn cut(&self) {
        self.0.cancel();
    }

    pub fn is_cut(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the connection is cut.
    pub async fn done(&self) {
        self.0.cancelled().await
    }

    /// `stream`, failing every read and write once this cuts it.
    pub fn sever<S>(&self, stream: S) -> Severable<S> {
        Severable::new(stream, self.0.clone())
    }
}
