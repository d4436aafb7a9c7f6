'use strict';

/*
 * Preloaded with `node --require` in schema-guard capture runs: every module name listed in
 * SCHEMA_GUARD_REPLACE (a JSON array) resolves to the recording backend named by
 * SCHEMA_GUARD_RECORDER, wherever and however it is required.
 */

const Module = require('module');

const names = JSON.parse(process.env.SCHEMA_GUARD_REPLACE || '[]');
const recorder = process.env.SCHEMA_GUARD_RECORDER;
const resolve = Module._resolveFilename;

Module._resolveFilename = function (request, parent, ...rest) {
    if (recorder && names.includes(request)) {
        return recorder;
    }
    return resolve.call(this, request, parent, ...rest);
};
