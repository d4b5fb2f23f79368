#!/usr/bin/env node
// Regenerates docs/api/openapi.json from the compiled route table (run `npm run build` first).
// test/integration/api-openapi.test.ts fails when the committed file differs from what a daemon serves.
import { readFileSync, writeFileSync } from 'node:fs';
import { renderOpenApi } from '../dist/src/adapters/http/openapi.js';
import { API_ROUTES, API_SCHEMAS } from '../dist/src/adapters/http/all-routes.js';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
writeFileSync(new URL('../docs/api/openapi.json', import.meta.url), renderOpenApi(API_ROUTES, API_SCHEMAS, version));
console.log('wrote docs/api/openapi.json');
