'use strict';

/*
 * Preloaded (`node --require`) in schema-guard capture runs:
 *  - every table backend module (restbase-mod-table-* except -spec, and the names in
 *    SCHEMA_GUARD_REPLACE) resolves to the recording module SCHEMA_GUARD_RECORDER, wherever
 *    and however it is required;
 *  - a storage driver (SCHEMA_GUARD_FORBID: sqlite3, cassandra-driver, ...) is never loaded:
 *    its require is recorded as `forbidden` and the process exits at once, so a backend that
 *    escaped substitution cannot run;
 *  - the service binding its port (SCHEMA_GUARD_PORT) means every schema was applied: that is
 *    recorded as `listen` and the process exits.
 */

const fs = require('fs');
const Module = require('module');
const net = require('net');

const record = (e) => fs.appendFileSync(process.env.SCHEMA_GUARD_RECORD, `${JSON.stringify(e)}\n`);
const replace = JSON.parse(process.env.SCHEMA_GUARD_REPLACE || '[]');
const forbid = JSON.parse(process.env.SCHEMA_GUARD_FORBID || '[]');
const recorder = process.env.SCHEMA_GUARD_RECORDER;
const port = Number(process.env.SCHEMA_GUARD_PORT);
const resolve = Module._resolveFilename;

function packageOf(request, resolved) {
    if (!request.startsWith('.') && !request.startsWith('/')) {
        const parts = request.split('/');
        return request.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
    }
    const m = /.*\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(resolved || '');
    return m ? m[1] : null;
}

Module._resolveFilename = function (request, parent, ...rest) {
    const pkg = packageOf(request, null);
    if (replace.includes(request) || (pkg && /^restbase-mod-table-/.test(pkg) && pkg !== 'restbase-mod-table-spec')) {
        return recorder;
    }
    const resolved = resolve.call(this, request, parent, ...rest);
    const name = packageOf(request, resolved);
    if (name && forbid.includes(name)) {
        record({ kind: 'forbidden', module: name, from: parent && parent.filename });
        process.exit(70);
    }
    return resolved;
};

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
    const first = args[0];
    const p = typeof first === 'object' && first !== null ? first.port : first;
    if (Number(p) === port) {
        record({ kind: 'listen', port });
        process.exit(0);
    }
    return listen.apply(this, args);
};
