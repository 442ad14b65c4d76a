//! Who made a version, as a node says it.

use crate::node::Shared;
use crate::protocol::VersionInfo;
use crate::record::{NodeId, Version};

impl Shared {
    /// A version with its coordinator's name, when this node knows it.
    pub(crate) fn describe(&self, version: Version) -> VersionInfo {
        let origin = if version.node == self.store.node_id() {
            Some(self.me.name.clone())
        } else {
            self.view()
                .members
                .iter()
                .find(|m| NodeId::from_name(&m.id.name) == version.node)
                .map(|m| m.id.name.clone())
        };
        VersionInfo { version, origin }
    }
}
