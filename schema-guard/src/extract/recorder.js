'use strict';

/*
 * Recording table backend for schema-guard capture runs. It speaks the table backend
 * interface of the service (`function (options, logger)` returning createTable/get/put/close),
 * accepts every schema, and appends each call to the JSON-lines file named by the
 * SCHEMA_GUARD_RECORD environment variable, so the tables come out exactly as the service
 * sends them.
 */

const fs = require('fs');

const file = process.env.SCHEMA_GUARD_RECORD;

function record(entry) {
    if (file) {
        fs.appendFileSync(file, JSON.stringify(entry) + '\n');
    }
}

module.exports = function recordingBackend(options) {
    const opts = options || {};
    record({
        kind: 'init',
        options: {
            storage_groups: opts.storage_groups,
            version: opts.version,
            datacenters: opts.datacenters,
            flavour: opts.flavour
        }
    });
    const rows = new Map();
    return {
        createTable(domain, schema, name) {
            record({ kind: 'table', domain, name, schema });
            return Promise.resolve({ status: 201 });
        },
        get(domain, table, key) {
            return Promise.resolve(rows.get(`${domain}\u0000${table}\u0000${key}`));
        },
        put(domain, table, key, value) {
            rows.set(`${domain}\u0000${table}\u0000${key}`, value);
            return Promise.resolve();
        },
        close() {
            return Promise.resolve();
        }
    };
};
