"""tokengraft's command line and (later) HTTP service around the hypernet library."""
