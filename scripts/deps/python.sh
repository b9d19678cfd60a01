# Python drivers for the tests (sourced by scripts/ensure-test-deps.sh): for
# the system Python, /usr/bin/python3, Debian 12's psycopg2 2.9.5,
# psycopg 3.1.7 with its pool, and SQLAlchemy 1.4.46.
apt_install python3 python3-psycopg2 python3-sqlalchemy python3-psycopg python3-psycopg-pool
