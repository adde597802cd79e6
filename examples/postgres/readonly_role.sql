-- A read-only role for dpgate on an existing PostgreSQL database.
-- Run as the database owner:
--   psql -d warehouse -v password="'choose-one'" -f examples/postgres/readonly_role.sql
-- dpgate sets default_transaction_read_only on its own sessions too; the
-- role below makes writing impossible even if that setting were lost.

CREATE ROLE dpgate LOGIN PASSWORD :password
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE dpgate SET default_transaction_read_only = on;
ALTER ROLE dpgate SET statement_timeout = '30s';

GRANT CONNECT ON DATABASE warehouse TO dpgate;
GRANT USAGE ON SCHEMA public TO dpgate;
-- Only the tables proxy.toml declares need SELECT; granting more does not
-- let analysts see more (undeclared tables and columns do not exist for
-- them), but least privilege is cheap.
GRANT SELECT ON public.visits TO dpgate;

-- dpgate refuses to start when this role is a superuser, may write a
-- declared table, or may read the server's files (pg_read_server_files,
-- pg_execute_server_program); keep it this plain. Catalog queries (psql's
-- \d, DBeaver, JDBC) never reach this server: dpgate runs its own
-- catalog cluster that holds only empty tables.
