//! tandem-search
