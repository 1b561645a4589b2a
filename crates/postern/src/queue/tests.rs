//! Scheduler tests without a network.

use super::*;
