"""ndmpd: an NDMP version 4 server with an ONTAP-compatible REST management plane."""

__version__ = "0.1.0"
