// The OpenAPI 3.1 description of the mount service's API, built from the operation table so that it cannot drift
// from what the server dispatches; the tests hold the server's responses to it.
import { API_PREFIX, API_VERSION, OPERATIONS } from './api';
import { ERROR_SCHEMA, paramSchema } from './codec';

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, unknown> = {};
  const errorResponse = {
    description: 'Failure: Node’s error shape',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  };
  for (const operation of OPERATIONS) {
    const params = Object.entries(operation.params);
    const body =
      operation.method === 'POST'
        ? {
            requestBody: {
              required: params.some(([, spec]) => spec.required),
              content: {
                'application/json': {
                  schema: {
                    type: 'object',
                    additionalProperties: false,
                    required: params.filter(([, spec]) => spec.required).map(([name]) => name),
                    properties: Object.fromEntries(
                      params.map(([name, spec]) => [name, { ...paramSchema(spec.type), description: spec.description }]),
                    ),
                  },
                },
              },
            },
          }
        : {
            parameters: params.map(([name, spec]) => ({
              name,
              in: 'query',
              required: spec.required === true,
              description: spec.description,
              schema: paramSchema(spec.type),
            })),
          };
    paths[`${API_PREFIX}/${operation.name}`] = {
      [operation.method.toLowerCase()]: {
        operationId: operation.name,
        summary: operation.summary,
        ...body,
        responses: {
          200: { description: 'Success', content: { 'application/json': { schema: operation.response } } },
          default: errorResponse,
        },
      },
    };
  }
  paths[`${API_PREFIX}/pool-fd`] = {
    get: {
      operationId: 'poolFd',
      summary: 'A descriptor of the pool, passed as SCM_RIGHTS with the response (read it with recvmsg); the connection then closes',
      responses: {
        200: {
          description: 'The pool’s size and page size; the descriptor rides along',
          content: {
            'application/json': {
              schema: {
                type: 'object',
                required: ['size', 'pageSize', 'uuid'],
                properties: { size: { type: 'integer' }, pageSize: { type: 'integer' }, uuid: { type: 'string' } },
              },
            },
          },
        },
        default: errorResponse,
      },
    },
  };
  paths[`${API_PREFIX}/openapi.json`] = {
    get: { operationId: 'openapi', summary: 'This document', responses: { 200: { description: 'OpenAPI 3.1' } } },
  };
  paths['/metrics'] = {
    get: {
      operationId: 'metrics',
      summary: 'Prometheus text exposition',
      responses: { 200: { description: 'text/plain; version=0.0.4' } },
    },
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'guestmemfs mount service',
      version: `${API_VERSION}.0.0`,
      description:
        'One pool’s metadata, served on a UNIX socket (curl --unix-socket). Each request runs with the caller’s kernel ' +
        'credentials (SO_PEERCRED); data never goes through the service: clients map the pool themselves.',
    },
    paths,
    components: { schemas: { Error: ERROR_SCHEMA } },
  };
}
