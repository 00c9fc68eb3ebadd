//! Every integration test in one binary: one link of the AWS SDKs instead of one per file
//! (disk and link time). Run one file's tests with `cargo test --test it MODULE::`.

mod api;
mod api_schema;
mod aws_moto;
mod cli;
mod common;
mod crash_moto;
mod dashboard;
mod deny;
mod deploy_cases;
mod deploy_cases_moto;
mod deploy_cli_cases;
mod deploy_files;
mod deploy_moto;
mod deploy_sim;
mod docs;
mod fuzz;
mod manifests;
mod notify;
mod prometheus;
mod repair_moto;
mod repair_sim;
mod replicas_moto;
mod rollout_props;
mod scaling_cases;
mod sim;
mod simulate;
mod spot_moto;
mod spot_sim;
mod weights_sim;
