"""The annotation database: schema, session factory, migrations, CRUD.

Open the default database and bring it to the newest schema::

    rationale-audit db upgrade
"""
