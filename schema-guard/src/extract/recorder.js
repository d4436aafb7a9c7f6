'use strict';

/*
 * Recording table module of schema-guard capture runs. It stands in for every storage
 * backend of the revision and speaks both interfaces a service may use:
 *  - a hyperswitch table module (what restbase-mod-table-sqlite and -cassandra export):
 *    `module.exports = (options) => ({ spec, operations: { createTable(hyper, req), ... } })`,
 *    options.conf holding storage_groups, version, backend...;
 *  - the fixture service's backend: `(options, logger)` returning createTable(domain, schema),
 *    get, put, close, options holding storage_groups directly.
 * Each createTable request is appended to the JSON-lines file named by SCHEMA_GUARD_RECORD
 * (table, schema, domain, and the storage group the domain resolves to, as the real backends
 * resolve it) and accepted. Rows are never stored: reads find nothing, writes succeed.
 */

const fs = require('fs');

const file = process.env.SCHEMA_GUARD_RECORD;

function record(entry) {
    fs.appendFileSync(file, `${JSON.stringify(entry)}\n`);
}

function groupsOf(list) {
    return (Array.isArray(list) ? list : []).map((g) => ({
        name: g && g.name,
        domains: [].concat(g && g.domains !== undefined ? g.domains : []).map(String)
    }));
}

// The backends' rule: groups in order, a domain pattern `/re/` is a RegExp, else equality.
function resolveGroup(groups, domain) {
    for (const g of groups) {
        for (const d of g.domains) {
            const re = /^\/.*\/$/.test(d) ? new RegExp(d.slice(1, -1)) : null;
            if ((re && re.test(domain)) || d === domain) {
                return g.name;
            }
        }
    }
    return null;
}

const SPEC = {
    paths: {
        '/{table}': {
            put: { operationId: 'createTable' },
            delete: { operationId: 'dropTable' },
            get: { operationId: 'getTableSchema' }
        },
        '/{table}/': {
            get: { operationId: 'get' }, put: { operationId: 'put' },
            post: { operationId: 'put' }, delete: { operationId: 'delete' }
        },
        '/{table}/{+rest}': {
            get: { operationId: 'get' }, put: { operationId: 'put' },
            post: { operationId: 'put' }, delete: { operationId: 'delete' }
        }
    }
};

module.exports = function recordingTableModule(options) {
    const opts = options || {};
    const hyper = !!(opts.conf && typeof opts.conf === 'object');
    const conf = hyper ? opts.conf : opts;
    const groups = groupsOf(conf.storage_groups);
    const pick = {};
    for (const k of ['version', 'backend', 'flavour', 'datacenters', 'replication',
        'default_replication', 'localDc', 'local_dc']) {
        if (conf[k] !== undefined) {
            pick[k] = conf[k];
        }
    }
    record({ kind: 'init', interface: hyper ? 'hyperswitch' : 'fixture',
        storage_groups: conf.storage_groups === undefined ? null : groups, options: pick });
    const created = (domain, table, schema) => {
        const s = Object.assign({}, schema, { table });
        record({ kind: 'table', domain, table, schema: s, group: resolveGroup(groups, domain) });
    };
    return {
        spec: SPEC,
        operations: {
            createTable(h, req) {
                created(req.params.domain, req.params.table, req.body || {});
                return Promise.resolve({ status: 201 });
            },
            dropTable: () => Promise.resolve({ status: 204 }),
            getTableSchema: () => Promise.resolve({ status: 404, body: { type: 'not_found' } }),
            get: () => Promise.resolve({ status: 404, body: { items: [] } }),
            put: () => Promise.resolve({ status: 201 }),
            delete: () => Promise.resolve({ status: 204 })
        },
        createTable(domain, schema) {
            created(domain, schema && schema.table, schema || {});
            return Promise.resolve({ status: 201 });
        },
        get: () => Promise.resolve(undefined),
        put: () => Promise.resolve(),
        close: () => Promise.resolve()
    };
};
