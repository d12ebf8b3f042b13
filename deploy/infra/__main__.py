"""`python -m deploy.infra`: see deploy/infra/cli.py and docs/deploying-to-aws.md."""

from deploy.infra.cli import main

if __name__ == "__main__":
    main()
