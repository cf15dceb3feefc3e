//! confirms scenarios.

#[allow(unused_imports)]
use crate::*;
