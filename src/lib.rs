//! AWS Lambda function for the AgentOS operation "Delete Learning User",
//! `DELETE /learnings/users/{user_id}`, on a DynamoDB learnings table.
//!
//! [`handler::handle`] is the path of a request. The other modules each hold
//! one concept of it, and all decisions but the deletion itself are pure
//! functions of their input.

pub mod attempts;
pub mod audit;
pub mod config;
pub mod errors;
pub mod event;
pub mod handler;
pub mod identity;
pub mod policy;
pub mod request;
pub mod store;
pub mod tables;
pub mod telemetry;
pub mod token;
pub mod xray;
