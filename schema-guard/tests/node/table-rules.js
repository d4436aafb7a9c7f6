#!/usr/bin/env node
'use strict';

/**
 * Runs the same sequences of table schemas through RESTBase's real table backends and through
 * the fixture service's table backend in the matching flavour, and prints, as JSON on stdout,
 * what each did at every step: accepted, or refused with the backend's reason.
 *
 *   node table-rules.js <node_modules holding the restbase-mod-table-* modules> <fixture dir>
 *
 * - SQLite: `restbase-mod-table-sqlite` itself, through the `createTable` operation of the
 *   hyperswitch table module, on a real database file. Each step starts a fresh instance on
 *   the same file, as a deploy starts a new release's code against the storage the old one
 *   left.
 * - Cassandra: there is no Cassandra here, so the step runs what `restbase-mod-table-cassandra`
 *   runs before it touches the cluster: its own schema normalisation and schema info, the hash
 *   comparison, and its `SchemaMigrator` with `skip_schema_update` (every validation, no CQL).
 *   The stored schema is the last one the module would have written to its meta table.
 *
 * Output: `[{case, flavour, steps: [{schema, real, fixture}]}]`, each side `{accepted, reason?}`.
 * The caller compares the sides, and what schema-guard predicts for each step.
 */

const fs = require('fs');
const os = require('os');
const path = require('path');

const [nodeModules, fixtureDir] = process.argv.slice(2);
if (!nodeModules || !fixtureDir) {
    process.stderr.write('usage: table-rules.js <node_modules> <fixture service dir>\n');
    process.exit(64);
}
const modules = path.resolve(nodeModules);
const sqliteModule = require(path.join(modules, 'restbase-mod-table-sqlite'));
const cassDbu = require(path.join(modules, 'restbase-mod-table-cassandra/lib/dbutils'));
const CassMigrator = require(path.join(modules, 'restbase-mod-table-cassandra/lib/schemaMigration'));
const fixtureStore = require(path.join(path.resolve(fixtureDir), 'lib/storage/file-store.js'));

const DOMAIN = 'en.wikipedia.org';
const GROUPS = [{ name: 'group.wikipedia', domains: ['/\\.wikipedia\\.org$/'] }];

function schema(version, attributes, index, extra) {
    return Object.assign({ table: 'pages', version, attributes, index }, extra || {});
}

const BASE_ATTRS = { title: 'string', rev: 'int', tid: 'timeuuid', body: 'blob' };
const BASE_INDEX = [
    { attribute: 'title', type: 'hash' },
    { attribute: 'rev', type: 'range', order: 'desc' },
    { attribute: 'tid', type: 'range', order: 'desc' }
];
const v = (version, more) => schema(version, Object.assign({}, BASE_ATTRS, (more && more.attrs) || {}),
    (more && more.index) || BASE_INDEX, more && more.extra);

/** Each case: a name and the schemas presented in order (the first creates the table). */
const CASES = [
    ['the same schema again', [v(1), v(1)]],
    ['a version bump alone', [v(1), v(2)]],
    ['a lower version, the same content', [v(2), v(1)]],
    ['a new column with a bump, then the old code (rollback)', [v(2), v(3, { attrs: { extra: 'string' } }), v(2)]],
    ['a new column without a bump', [v(1), v(1, { attrs: { extra: 'string' } })]],
    ['a removed column with a bump', [v(1), v(2, { attrs: { body: undefined } })]],
    ['an attribute type change with a bump', [v(1), v(2, { attrs: { body: 'string' } })]],
    ['a new hash key with a bump', [v(1), v(2, {
        attrs: { lang: 'string' },
        index: [{ attribute: 'lang', type: 'hash' }].concat(BASE_INDEX)
    })]],
    ['a range key changes direction, with a bump', [v(1), v(2, {
        index: [BASE_INDEX[0], { attribute: 'rev', type: 'range', order: 'asc' }, BASE_INDEX[2]]
    })]],
    ['a range key without a direction gets one, with a bump', [
        v(1, { index: [BASE_INDEX[0], { attribute: 'rev', type: 'range' }, BASE_INDEX[2]] }),
        v(2, { index: [BASE_INDEX[0], { attribute: 'rev', type: 'range', order: 'asc' }, BASE_INDEX[2]] })
    ]],
    ['a hash key gets a direction, with a bump', [v(1), v(2, {
        index: [{ attribute: 'title', type: 'hash', order: 'asc' }, BASE_INDEX[1], BASE_INDEX[2]]
    })]],
    ['range keys swap places, with a bump', [v(1), v(2, {
        index: [BASE_INDEX[0], BASE_INDEX[2], BASE_INDEX[1]]
    })]],
    ['a new static column with a bump', [v(1), v(2, {
        attrs: { latest: 'int' },
        index: BASE_INDEX.concat([{ attribute: 'latest', type: 'static' }])
    })]],
    ['an existing column made static with a bump', [v(1), v(2, {
        index: BASE_INDEX.concat([{ attribute: 'body', type: 'static' }])
    })]],
    ['an options change with a bump', [v(1), v(2, { extra: { options: { default_time_to_live: 3600 } } })]],
    ['two bumps, then the first version', [v(1), v(2), v(3), v(1)]]
];

function clean(s) {
    // Attributes set to undefined (a removed column) must not reach the backends.
    return JSON.parse(JSON.stringify(s));
}

function refusedBecause(title) {
    const m = /requested schema \((?:Error: )?(.*)\)\.$/.exec(title);
    return m ? m[1] : title;
}

async function realSqlite(dbname, body) {
    const handler = await sqliteModule({
        conf: { dbname, pool_idle_timeout: 100, retry_delay: 10, storage_groups: GROUPS },
        log: () => {}
    });
    const res = await handler.operations.createTable(null, {
        params: { domain: DOMAIN, table: body.table },
        body: clean(body)
    });
    if (res.status === 201) {
        return { accepted: true };
    }
    const title = String((res.body && res.body.title) || JSON.stringify(res.body));
    return { accepted: false, reason: refusedBecause(title), status: res.status };
}

/** What `restbase-mod-table-cassandra` decides for `body` against the schema it stored. */
async function realCassandra(state, body) {
    const schema = cassDbu.validateAndNormalizeSchema(clean(body), 1);
    const info = cassDbu.makeSchemaInfo(schema);
    if (!state.stored) {
        state.stored = info;
        return { accepted: true };
    }
    if (state.stored.hash === info.hash) {
        return { accepted: true };
    }
    const migrator = new CassMigrator({ db: null, client: null, log: () => {}, skip_schema_update: true });
    const req = { keyspace: 'local_group_wikipedia_T_pages', columnfamily: 'data', query: {} };
    try {
        if (await migrator.migrate(req, state.stored, info)) {
            state.stored = info;
        }
        return { accepted: true };
    } catch (error) {
        const title = `The table already exists, and it cannot be upgraded to the requested schema (${error}).`;
        return { accepted: false, reason: refusedBecause(title), status: 400 };
    }
}

async function fixture(storePath, flavour, body) {
    const store = fixtureStore({ path: storePath, flavour, storage_groups: GROUPS });
    try {
        await store.createTable(DOMAIN, clean(body));
        return { accepted: true };
    } catch (e) {
        return { accepted: false, reason: e.reason || e.message, status: e.status };
    } finally {
        await store.close();
    }
}

async function main() {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'table-rules-'));
    const out = [];
    try {
        for (const [i, [name, steps]] of CASES.entries()) {
            const dbname = path.join(work, `real-${i}.sqlite3`);
            const cassandra = { stored: null };
            const results = { sqlite: [], cassandra: [] };
            for (const body of steps) {
                results.sqlite.push({
                    schema: clean(body),
                    real: await realSqlite(dbname, body),
                    fixture: await fixture(path.join(work, `sqlite-${i}.json`), 'sqlite', body)
                });
                results.cassandra.push({
                    schema: clean(body),
                    real: await realCassandra(cassandra, body),
                    fixture: await fixture(path.join(work, `cassandra-${i}.json`), 'cassandra', body)
                });
            }
            for (const flavour of Object.keys(results)) {
                out.push({ case: name, flavour, steps: results[flavour] });
            }
        }
    } finally {
        fs.rmSync(work, { recursive: true, force: true });
    }
    process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
}

main().then(() => process.exit(0), (e) => {
    process.stderr.write(`table-rules: ${e && e.stack || e}\n`);
    process.exit(1);
});
