//! coxswain: an autoscaling and continuous-deployment controller for fleets of EC2
//! instances.
//!
//! Layers, each thin: [`daemon`] (signals, reload, pacing) → [`controller`] (level-triggered
//! reconcile) → [`policy`] (pure decisions) and [`cloud`] (one narrow trait, `aws` and
//! `sim` implementations). Time comes from an injected [`clock::Clock`].

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cloud;
pub mod controller;
pub mod daemon;
pub mod demo;
pub mod deploy;
pub mod fence;
pub mod lease;
pub mod logging;
pub mod manifest;
pub mod notify;
pub mod policy;
pub mod replica;
pub mod simulate;
pub mod store;
pub mod telemetry;
pub mod tls;
