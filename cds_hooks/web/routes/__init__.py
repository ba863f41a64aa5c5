"""One router per HTTP surface of the CDS service, composed by ``cds_hooks.web.app.create_app``."""
