//! SFTP for pymatris.
