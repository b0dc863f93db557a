//! The kill switch the executors read: the API's own setting, so one switch
//! stops the policy and the executors alike.

use std::sync::Arc;

use async_trait::async_trait;
use executors::{ExecError, KillSwitch};

use crate::access::Access;

/// The executors read the same kill switch as the policy: the API's setting.
pub struct SharedKillSwitch(pub Access);

#[async_trait]
impl KillSwitch for SharedKillSwitch {
    async fn engaged(&self) -> Result<bool, ExecError> {
        self.0
            .kill_switch()
            .await
            .map(|k| k.enabled)
            .map_err(|e| ExecError::Backend(format!("reading the kill switch: {e}")))
    }
}

impl SharedKillSwitch {
    pub fn arc(access: Access) -> Arc<dyn KillSwitch> {
        Arc::new(SharedKillSwitch(access))
    }
}
