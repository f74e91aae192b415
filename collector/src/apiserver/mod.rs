//! API server requests: estimate HTTP requests and open streams under TLS from the record and burst pattern the kernel reports.
