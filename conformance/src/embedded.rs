//! An embedded Warren to run the scenarios against: one broker for the whole run.

use crate::driver::Url;

/// A running embedded broker.
#[derive(Debug)]
pub struct Warren {
    broker: warren_broker::Broker,
    url: Url,
}

impl Warren {
    /// Starts Warren in this process on a free port, with its management
    /// listener on another, imitating `profile`.
    pub async fn start(profile: &warren_broker::Profile) -> Result<Warren, String> {
        let mut builder = warren_broker::Broker::builder()
            .management(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .rabbitmq_version(profile.version());
        for (feature, permit) in profile.overrides() {
            builder = if permit {
                builder.permit_deprecated(feature)
            } else {
                builder.deny_deprecated(feature)
            };
        }
        let broker = builder.start().await.map_err(|e| e.to_string())?;
        let mut url = Url::parse(&broker.url()).map_err(|e| e.to_string())?;
        url.management = broker.management_url();
        url.profile = profile.clone();
        crate::admin::register_embedded(&url.addr, broker.users().clone());
        Ok(Warren { broker, url })
    }

    /// The URL it serves.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Stops it gracefully.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
    }
}
