//! Text and JSON renderings of API responses: the fleet's state ([`fleet`]) and the
//! resources the API manages ([`resources`], [`pipelines`]). Pure functions, so they are easy to test.

mod fleet;
mod models;
mod pipelines;
mod resources;

pub use fleet::*;
pub use models::*;
pub use pipelines::*;
pub use resources::*;
