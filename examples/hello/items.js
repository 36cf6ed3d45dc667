// The list lives in SQL; its table is made by the migration, once.
import { getApplicationDb } from '@proven-network/sql';

const db = getApplicationDb('main').migrate(
    'CREATE TABLE items (id INTEGER PRIMARY KEY, text TEXT NOT NULL, '
    + 'created INTEGER NOT NULL)');

export async function addItem(text) {
    const created = Math.floor(Date.now() / 1000);
    const { lastInsertRowid } = await db.execute(
        'INSERT INTO items (text, created) VALUES (?, ?)', [text, created]);
    return { id: lastInsertRowid, text, created };
}

export function listItems() {
    return db.query('SELECT id, text, created FROM items ORDER BY id');
}

export async function getItem(id) {
    const rows = await db.query(
        'SELECT id, text, created FROM items WHERE id = ?', [id]);
    return rows[0];
}
