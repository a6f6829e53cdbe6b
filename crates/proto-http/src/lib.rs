//! HTTP and HTTPS for pymatris.
