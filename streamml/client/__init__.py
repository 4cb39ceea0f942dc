"""The model server's HTTP client (:mod:`.api`) and result delivery (:mod:`.delivery`: retry,
spool, re-delivery), shared by everyone who talks to a server: the operator (creating models,
polling metrics), the sweep engine (learning curve, spooled results), the job program and the
tools in ``clients/``. It imports only the core and the vocabulary."""
