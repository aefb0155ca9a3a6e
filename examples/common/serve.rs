//! What the benchmarks that run medic in-process share: `serve`'s server on a loopback port,
//! over a SQLite store in `dir`, until stopped.

use std::sync::Arc;

pub struct Served {
    pub store: Arc<dyn medic::store::Store>,
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start(config: medic::config::Config, dir: &std::path::Path) -> anyhow::Result<Served> {
    let store = medic::store::open(&format!("sqlite://{}", dir.join("medic.db").display()), 4).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = store.clone();
    let server = tokio::spawn(async move {
        medic::server::run(listener, &config, s, Arc::new(medic::time::SystemClock), async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Served { store, base, stop, server })
}

impl Served {
    /// Stops the server, waits for it, closes the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        self.store.close().await;
        Ok(())
    }
}
