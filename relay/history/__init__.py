"""The Conversations REST client (`history`, and the pooled session the REST proxy shares)."""
