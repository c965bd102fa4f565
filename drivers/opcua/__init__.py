"""OPC UA driver: config models, node references, certificates, quality mapping, driver."""
