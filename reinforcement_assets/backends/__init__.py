"""The stores and artifact storages: PostgreSQL (embedded or URL) and Supabase."""
