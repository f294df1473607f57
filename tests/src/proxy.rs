//! A TCP relay between a process and a server that a test can cut: every
//! connection through it is dropped at once, as a network failure or a
//! broker restart would, without touching anyone else's connections. It can
//! also go silent ([`Proxy::freeze`]): its connections stay open and carry
//! nothing more, as a server frozen or a path lost without a reset does.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Connections a freeze silenced: kept open, never read nor written again.
type Silenced = Arc<Mutex<Vec<(TcpStream, Option<TcpStream>)>>>;

pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    frozen: watch::Sender<bool>,
    silenced: Silenced,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let silenced: Silenced = Arc::default();
        let (frozen, _) = watch::channel(false);
        let (target, registry, held, freezes) = (target.to_owned(), links.clone(), silenced.clone(), frozen.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (target, held) = (target.clone(), held.clone());
                let mut freeze = freezes.subscribe();
                let link = tokio::spawn(async move {
                    if *freeze.borrow() {
                        held.lock().unwrap().push((inbound, None));
                        return;
                    }
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let silenced = tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                            _ = freeze.wait_for(|f| *f) => true,
                        };
                        if silenced {
                            held.lock().unwrap().push((inbound, Some(outbound)));
                        }
                    }
                });
                registry.lock().unwrap().push(link);
            }
        });
        Proxy { port, links, accept, frozen, silenced }
    }

    /// Drops every open connection; new ones are accepted again.
    pub fn cut(&self) -> usize {
        let links: Vec<_> = self.links.lock().unwrap().drain(..).collect();
        let n = links.iter().filter(|l| !l.is_finished()).count();
        for link in links {
            link.abort();
        }
        n
    }

    /// Every open connection goes silent for good, and so does every new
    /// one until [`Proxy::thaw`]: nothing is forwarded, nothing is closed,
    /// so neither end learns anything (the proxy's kernel acknowledges what
    /// the client sends, keepalive probes included).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// New connections are forwarded again; the silenced ones stay silent.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Connections silenced so far.
    pub fn silenced(&self) -> usize {
        self.silenced.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
        self.silenced.lock().unwrap().clear();
    }
}
