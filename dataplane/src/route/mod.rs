//! Longest-prefix-match route table for IPv4 and IPv6, published RCU-style.
//!
//! The control plane keeps the prefix list in a [`TableBuilder`], builds an immutable [`Table`]
//! snapshot from it off the fast path, and [`Published::publish`]es it. Each worker calls
//! [`Published::load`] once per batch and does all the batch's lookups on that one snapshot, so
//! a route change never lets a batch see half of one table and half of another, and the old
//! snapshot stays valid until every reader has moved on.
//!
//! What this module must never do on the read side: block, take a lock, allocate, or free a
//! snapshot. An IPv4 lookup is one array load for prefixes up to /24 and two beyond (DIR-24-8);
//! [`trie`] explains the structure, `docs/route.md` why it was chosen and what it costs.
//! Control-plane code should publish with [`Published::publish_with`] so that the arrays of
//! the snapshot replaced last time are reused by the next build.
//!
//! ```
//! use std::net::Ipv4Addr;
//!
//! use linen_dataplane::route::{Published, TableBuilder};
//!
//! let mut routes = TableBuilder::new();
//! routes.insert("10.244.0.0/16".parse().unwrap(), "cluster");
//! routes.insert("10.244.8.0/24".parse().unwrap(), "node-8");
//! let published = Published::new(routes.build());
//!
//! // A worker, once per batch:
//! let table = published.load();
//! assert_eq!(table.lookup_v4(u32::from(Ipv4Addr::new(10, 244, 8, 7))), Some(&"node-8"));
//! assert_eq!(table.lookup_v4(u32::from(Ipv4Addr::new(10, 244, 9, 7))), Some(&"cluster"));
//! assert_eq!(table.lookup_v4(u32::from(Ipv4Addr::new(192, 168, 0, 1))), None);
//! drop(table);
//!
//! // The control plane, on a change:
//! routes.remove(&"10.244.8.0/24".parse().unwrap());
//! published.publish_with(|| routes.build());
//! assert_eq!(published.load().lookup_v4(u32::from(Ipv4Addr::new(10, 244, 8, 7))), Some(&"cluster"));
//! ```

mod rcu;
pub mod synthetic;
mod table;
pub mod trie;

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use rcu::{Published, Snapshot};
pub use table::{Table, TableBuilder, V4Layout};
