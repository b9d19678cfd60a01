# Python drivers for the tests (sourced by scripts/ensure-test-deps.sh).
apt_install python3 python3-psycopg2 python3-sqlalchemy
