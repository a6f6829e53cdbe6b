//! FTP and FTPS for pymatris.
