"""Pipeline definition, local engine and the tools that run them."""
