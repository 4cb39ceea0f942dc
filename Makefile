.PHONY: demo test test-node lint bench crds images

demo:   ## install what is needed, then run the demo end to end
	bash scripts/bootstrap.sh
	.venv/bin/streamml demo $(ARGS)

test:   ## install what is needed, then lint, type-check and run every test
	bash scripts/test.sh $(ARGS)

test-node:  ## build a real node (kubelet, CoreDNS, Traefik; root) and the images, run their tests
	bash scripts/test-node.sh $(ARGS)

bench:  ## run every benchmark (each prints a table and writes benchmarks/results/*.json)
	.venv/bin/python benchmarks/server_bench.py --rounds 5
	.venv/bin/python benchmarks/operator_bench.py
	.venv/bin/python benchmarks/scheduler_bench.py
	.venv/bin/python benchmarks/sweep_bench.py
	.venv/bin/python benchmarks/learning_quality.py

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && bash scripts/typecheck.sh

crds:   ## regenerate crds/, config/crd/ and docs/crd-reference.md from the pydantic schemas
	.venv/bin/streamml crds --out crds --out config/crd
	.venv/bin/python -P -m streamml.docgen

images: ## build the server, operator and job images from the Dockerfiles (buildah; cached tars)
	bash scripts/bootstrap.sh
	.venv/bin/streamml images build
